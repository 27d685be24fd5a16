"""Train step with the towers' last blocks computing only the pooled token (the default)
against the plain form that computes every token, in one process, taking turns.

    taskset -c 1 python bench/last_block.py --batch 8 --threads 1 --rounds 9
    python bench/last_block.py --model ViT-B/16 --batch 256 --dtype bfloat16   # GPU

Both forms give the same features and gradients (`tests/models/test_layers.py`); this
prints what the skipped work is worth on the machine at hand: milliseconds per step
(wall and CPU), the matmul FLOPs of each, and the speed-up.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402  (sets the torchvision-before-tensorflow import order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser, steps=1, rounds=5)
    args = parser.parse_args()
    harness.limit_threads(args.threads)

    import jax
    import numpy as np

    from clip_jax.flops import train_step_flops
    from clip_jax.sharding import global_batch
    from clip_jax.train_config import base_config
    from clip_jax.trainer import build, jit_train_step

    config = base_config()
    config.model, config.batch_size, config.total_steps = args.model, args.batch, 1000
    config.compute_dtype, config.trim_text = args.dtype, "never"
    setup = build(config)
    size = setup.model.config.vision.image_size
    rs = np.random.RandomState(0)
    batch = global_batch({"images": rs.randn(args.batch, size, size, 3).astype(np.float32),
                          "tokens": harness.caption_tokens("random", args.batch, order="sampled")}, setup.mesh)
    forms = {"pooled": setup.model, "plain": setup.model.clone(full_last_block=True)}
    runners = {}
    for name, model in forms.items():
        holder = {"state": setup.init_state(jax.random.key(0, impl="rbg"))}  # each form its own (donated) state
        compiled = jit_train_step(setup, model).lower(holder["state"], batch).compile()

        def run(compiled=compiled, holder=holder):
            holder["state"], metrics = compiled(holder["state"], batch)
            jax.block_until_ready(metrics["loss"])

        run()  # warm-up
        runners[name] = run
    print(f"{harness.backend_description()}; {args.model}, batch {args.batch}, {args.dtype}, 77-token captions")
    seconds = harness.interleaved(runners, args.rounds, args.steps)
    for name, times in seconds.items():
        flops = train_step_flops(forms[name], args.batch)
        print(f"{name:7s} {times['wall'] * 1e3:9.1f} ms/step {times['cpu'] * 1e3:9.1f} CPU-ms/step "
              f"{flops / 1e9:8.1f} GFLOP")
    print(f"pooled last block speed-up: {seconds['plain']['wall'] / seconds['pooled']['wall']:.3f}x (wall), "
          f"{seconds['plain']['cpu'] / seconds['pooled']['cpu']:.3f}x (CPU time)")


if __name__ == "__main__":
    main()
