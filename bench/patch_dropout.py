"""Train-step throughput with and without FLIP's patch dropout, in the same run.

    python bench/patch_dropout.py [--model ViT-B/16] [--batch 8] [--rates 0,0.5] [--steps 3]

Times the whole jitted train step (forward, loss, backward, AdamW) on whatever backend
is present, after one warm-up step, and prints examples/s and the speed-up over rate 0.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B/16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rates", default="0,0.5")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    import jax
    import numpy as np

    from clip_jax.sharding import global_batch
    from clip_jax.train_config import base_config
    from clip_jax.trainer import build, jit_train_step

    print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, {args.model}, batch {args.batch}, {args.dtype}")
    baseline = None
    for rate in (float(r) for r in args.rates.split(",")):
        config = base_config()
        config.model, config.batch_size, config.total_steps = args.model, args.batch, 100
        config.compute_dtype, config.patch_dropout = args.dtype, rate
        setup = build(config)
        state = setup.init_state(jax.random.key(0, impl="rbg"))
        size = setup.model.config.vision.image_size
        rs = np.random.RandomState(0)
        batch = global_batch({"images": rs.randn(args.batch, size, size, 3).astype(np.float32),
                              "tokens": rs.randint(1, 49406, (args.batch, 77)).astype(np.int32)}, setup.mesh)
        step = jit_train_step(setup).lower(state, batch).compile()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        rate_per_s = args.steps * args.batch / (time.perf_counter() - start)
        baseline = baseline or rate_per_s
        print(f"patch_dropout {rate:.2f}: {rate_per_s:8.2f} examples/s  ({rate_per_s / baseline:.2f}x)")


if __name__ == "__main__":
    main()
