"""Per-device memory of the contrastive losses and of the ViT-B/32 train step at a
32,768 global batch: gathered, ring and plain global-logits softmax losses and the
sigmoid losses, from XLA's compiled memory analysis on simulated CPU devices (nothing
runs).

    python bench/loss_memory.py [--devices 8] [--batch 32768] [--model ViT-B/32] [--skip-step] [--remat]
        [--accumulation K] [--losses softmax,softmax_ring,...]

Prints the temporary memory of the loss alone (on [batch, 512] embeddings) and of the
whole train step (forward, loss, backward, AdamW), per device, for both losses.
"""
from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32768)
    parser.add_argument("--model", default="ViT-B/32")
    parser.add_argument("--skip-step", action="store_true", help="only the loss, not the whole train step")
    parser.add_argument("--remat", action="store_true", help="recompute each block in the backward pass")
    parser.add_argument("--accumulation", type=int, default=1, help="embedding-cache accumulation steps")
    parser.add_argument("--losses", default="softmax,softmax_ring,softmax_global,sigmoid,sigmoid_dense")
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax
    import jax.numpy as jnp

    from clip_jax import losses
    from clip_jax.sharding import batch_sharding, make_mesh
    from clip_jax.train_config import base_config
    from clip_jax.trainer import build, jit_train_step

    gib = 2.0**30
    mesh = make_mesh([("data", -1), ("fsdp", 1)])
    embed = jax.ShapeDtypeStruct((args.batch, 512), jnp.float32, sharding=batch_sharding(mesh))
    scale = jax.ShapeDtypeStruct((), jnp.float32)
    print(f"{jax.device_count()} simulated {jax.devices()[0].platform} devices, global batch {args.batch}, "
          f"{args.model}, bf16 compute, remat={args.remat}, accumulation={args.accumulation}")
    print(f"{'loss':<16}{'part':<12}{'temp GiB/device':>18}{'args GiB/device':>18}")
    for name in args.losses.split(","):
        def loss_and_grads(i, t, s):
            loss = lambda a, b: losses.loss_spec(name)(a, b, s, bias=jnp.float32(-10.0), mesh=mesh)[0]  # noqa: E731
            return jax.value_and_grad(loss, argnums=(0, 1))(i, t)

        memory = jax.jit(loss_and_grads).lower(embed, embed, scale).compile().memory_analysis()
        print(f"{name:<16}{'loss+grad':<12}{memory.temp_size_in_bytes / gib:>18.3f}"
              f"{memory.argument_size_in_bytes / gib:>18.3f}")
        if args.skip_step or name not in ("softmax", "softmax_global"):
            continue
        config = base_config()
        config.model, config.batch_size, config.total_steps, config.loss = args.model, args.batch, 10, name
        config.remat = args.remat
        config.accumulation_steps = args.accumulation
        setup = build(config)
        state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                             setup.abstract_state, setup.state_shardings)
        size = setup.model.config.vision.image_size
        batch = {
            "images": jax.ShapeDtypeStruct((args.batch, size, size, 3), jnp.float32, sharding=batch_sharding(mesh)),
            "tokens": jax.ShapeDtypeStruct((args.batch, 77), jnp.int32, sharding=batch_sharding(mesh)),
        }
        memory = jit_train_step(setup).lower(state, batch).compile().memory_analysis()
        print(f"{name:<16}{'train step':<12}{memory.temp_size_in_bytes / gib:>18.3f}"
              f"{memory.argument_size_in_bytes / gib:>18.3f}")


if __name__ == "__main__":
    main()
