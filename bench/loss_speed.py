"""Step time of the contrastive losses (loss + gradient on the embeddings), in the same
run: gathered vs ring softmax, ring vs plain sigmoid.

    python bench/loss_speed.py [--devices 8] [--batch 8192] [--dim 512] [--repeats 5]

On simulated CPU devices this measures the extra work of the ring (one ppermute and one
block matmul per device per step, recomputed in the backward pass), not interconnect
speed; run it on real accelerators for that.
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from clip_jax import losses
    from clip_jax.sharding import batch_sharding, make_mesh

    mesh = make_mesh([("data", -1), ("fsdp", 1)])
    rs = np.random.RandomState(0)
    put = lambda x: jax.device_put(losses.l2_normalize(x), batch_sharding(mesh))  # noqa: E731
    image, text = (
        put(rs.randn(args.batch, args.dim).astype(np.float32)),
        put(rs.randn(args.batch, args.dim).astype(np.float32)),
    )
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, global batch {args.batch}, dim {args.dim}")
    times = {}
    for name in ("softmax", "softmax_ring", "sigmoid_dense", "sigmoid"):
        fn = jax.jit(
            jax.value_and_grad(
                lambda i, t: losses.loss_spec(name)(i, t, jnp.float32(10.0), bias=jnp.float32(-10.0), mesh=mesh)[0],
                argnums=(0, 1),
            )
        )
        jax.block_until_ready(fn(image, text))
        start = time.perf_counter()
        for _ in range(args.repeats):
            out = fn(image, text)
        jax.block_until_ready(out)
        times[name] = (time.perf_counter() - start) / args.repeats
    for name, reference in (("softmax_ring", "softmax"), ("sigmoid", "sigmoid_dense")):
        print(
            f"{reference:<14} {times[reference] * 1e3:9.1f} ms   {name:<13} {times[name] * 1e3:9.1f} ms   "
            f"ratio {times[name] / times[reference]:.2f}x"
        )


if __name__ == "__main__":
    main()
