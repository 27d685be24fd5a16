"""Whole train-step throughput (forward, contrastive loss, backward, AdamW update) of
clip_jax, and of open_clip's equivalent step measured in the same run.

    python bench/train_step.py --model ViT-B/32 --batch 32 --dtype float32 --vs open_clip
    python bench/train_step.py --model ViT-B/16 --batch 256 --dtype bfloat16 --vs open_clip  # GPU

Prints examples/s of each, the ratio, the step's model FLOPs (3x the forward pass's
matmuls, `clip_jax.flops`, counted for the work each side does) and what fraction of
the hardware limit they reach: on a CPU the measured float32 matmul peak of this
machine, on a GPU/TPU the chip's dense bf16 peak (MFU).

open_clip's step is its training loop's: `model(images, texts)`, `ClipLoss`, backward,
`torch.optim.AdamW`, and the logit-scale clamp; bf16 runs use `torch.autocast` as its
`--precision amp_bf16` does.  Both sides use every host core, or one with --threads 1.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402  (sets the torchvision-before-tensorflow import order)


def clip_jax_runner(args, captions):
    import jax
    import numpy as np

    from clip_jax.flops import train_step_flops
    from clip_jax.models.text import trim_after_eot
    from clip_jax.sharding import global_batch
    from clip_jax.train_config import base_config
    from clip_jax.trainer import build, jit_train_step

    config = base_config()
    config.model, config.batch_size, config.total_steps = args.model, args.batch, 1000
    config.compute_dtype, config.remat, config.loss = args.dtype, args.remat, args.loss
    config.trim_text = "always" if args.trim_text else "never"
    setup = build(config)
    state = setup.init_state(jax.random.key(0, impl="rbg"))
    size = setup.model.config.vision.image_size
    rs = np.random.RandomState(0)
    tokens = captions
    if args.trim_text:  # as the trainer does (single process)
        tokens = trim_after_eot(tokens)
    batch = global_batch({"images": rs.randn(args.batch, size, size, 3).astype(np.float32),
                          "tokens": tokens}, setup.mesh)
    compiled = jit_train_step(setup).lower(state, batch).compile()
    flops = train_step_flops(setup.model, args.batch, tokens.shape[1])
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    run()  # warm-up: the first call allocates and autotunes
    return run, flops, size, tokens.shape[1], setup.model


def open_clip_runner(args, size, captions):
    import numpy as np
    import open_clip
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads or os.cpu_count())
    model = open_clip.create_model(harness.open_clip_name(args.model), device=device)
    model.train()
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    rs = np.random.RandomState(0)
    images = torch.from_numpy(rs.randn(args.batch, 3, size, size).astype(np.float32)).to(device)
    texts = torch.from_numpy(captions.astype(np.int64)).to(device)
    if args.torch_compile:
        model = torch.compile(model)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    unwrapped = getattr(model, "_orig_mod", model)

    def run():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            image_features, text_features, logit_scale = model(images, texts)
            loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            unwrapped.logit_scale.clamp_(0, math.log(100))
        harness.torch_sync(device)

    run()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser, steps=2, rounds=5)
    parser.add_argument("--loss", default="softmax")
    parser.add_argument("--texts", default="random", choices=["random", "prompts"])
    parser.add_argument("--trim-text", type=int, default=1, help="0: always all 77 text positions")
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile open_clip's model")
    args = parser.parse_args()
    harness.limit_threads(args.threads)

    from clip_jax.flops import train_step_flops

    print(f"{harness.backend_description()}; {args.model}, batch {args.batch}, {args.dtype}, loss {args.loss}"
          f"{', remat' if args.remat else ''}; texts: {args.texts}")
    captions = harness.caption_tokens(args.texts, args.batch, order="sampled")
    runners = {}
    runners["clip_jax"], clip_jax_flops, size, text_length, model = clip_jax_runner(args, captions)
    print(f"clip_jax text positions per caption: {text_length} of 77")

    # Model FLOPs of the work each side does: open_clip always runs all 77 positions, and
    # every token through the last blocks.
    flops_of = {"clip_jax": clip_jax_flops,
                "open_clip": train_step_flops(model.clone(full_last_block=True), args.batch)}
    if args.vs == "open_clip":
        runners["open_clip"] = open_clip_runner(args, size, captions)
    seconds = harness.interleaved(runners, args.rounds, args.steps)

    peak, peak_name = harness.hardware_peak()
    for name, times in seconds.items():
        step_s, flops = times["wall"], flops_of[name]
        line = (f"{name:10s} {args.batch / step_s:9.2f} examples/s  ({step_s * 1e3:8.1f} ms/step, "
                f"{times['cpu'] * 1e3:8.1f} CPU-ms/step)")
        if flops and peak:
            line += f"  {flops / step_s / 1e9:8.1f} GFLOP/s = {flops / step_s / peak:6.1%} of the {peak_name}"
        print(line)
    print("step model FLOPs: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP" for k, v in flops_of.items() if k in seconds)
          + f"; {peak_name}: {peak / 1e9 if peak else float('nan'):.1f} GFLOP/s")
    if "open_clip" in seconds:
        wall = seconds["open_clip"]["wall"] / seconds["clip_jax"]["wall"]
        cpu = seconds["open_clip"]["cpu"] / seconds["clip_jax"]["cpu"]
        print(f"clip_jax / open_clip examples/s: {wall:.2f}x (wall clock), {cpu:.2f}x (per CPU-second)")


if __name__ == "__main__":
    main()
