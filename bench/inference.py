"""Image and text embedding throughput of clip_jax, and of open_clip in the same run.

    python bench/inference.py --model ViT-B/32 --batch 32 --dtype float32
    python bench/inference.py --model ViT-L/14 --batch 256 --dtype bfloat16   # GPU

Each side embeds one fixed batch repeatedly (`clip_jax.encode_image` / `encode_text`,
jitted, text from host tokens so it is trimmed after the last EOT; open_clip's
`encode_image` / `encode_text` under `torch.inference_mode`, with `torch.autocast` for
bf16), the two taking turns round by round.  Prints embeddings/s,
the ratio, and the fraction of the hardware limit (as bench/train_step.py).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402  (allocator and import order first)


def clip_jax_runners(args, captions):
    import jax
    import numpy as np

    from clip_jax import create_model, encode_image, encode_text
    from clip_jax.inference import init_variables

    model = create_model(args.model, dtype=args.dtype)
    variables = init_variables(model)
    size = model.config.vision.image_size
    rs = np.random.RandomState(0)
    images = jax.device_put(rs.randn(args.batch, size, size, 3).astype(np.float32))
    tokens = captions  # host tokens: encode_text trims them after the last EOT

    def image():
        jax.block_until_ready(encode_image(model, variables, images))

    def text():
        jax.block_until_ready(encode_text(model, variables, tokens))

    image(), text()  # compile
    return {"image": image, "text": text}, model, size


def open_clip_runners(args, size, captions):
    import numpy as np
    import open_clip
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads or os.cpu_count())
    model = open_clip.create_model(harness.open_clip_name(args.model), device=device).eval()
    rs = np.random.RandomState(0)
    images = torch.from_numpy(rs.randn(args.batch, 3, size, size).astype(np.float32)).to(device)
    tokens = torch.from_numpy(captions.astype(np.int64)).to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def image():
        with torch.inference_mode(), autocast:
            model.encode_image(images)
        harness.torch_sync(device)

    def text():
        with torch.inference_mode(), autocast:
            model.encode_text(tokens)
        harness.torch_sync(device)

    image(), text()
    return {"image": image, "text": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser, steps=3, rounds=5)
    parser.add_argument("--texts", default="prompts", choices=["prompts", "random"])
    args = parser.parse_args()
    harness.limit_threads(args.threads)

    from clip_jax.flops import tower_forward_flops
    from clip_jax.models.text import trim_after_eot

    captions = harness.caption_tokens(args.texts, args.batch, order="class_major")
    print(f"{harness.backend_description()}; {args.model}, batch {args.batch}, {args.dtype}; texts: {args.texts}, "
          f"{trim_after_eot(captions).shape[1]} of 77 positions after trimming")
    ours, model, size = clip_jax_runners(args, captions)
    theirs = open_clip_runners(args, size, captions) if args.vs == "open_clip" else {}
    peak, peak_name = harness.hardware_peak()
    for tower in ("image", "text"):
        runners = {"clip_jax": ours[tower]}
        if theirs:
            runners["open_clip"] = theirs[tower]
        seconds = harness.interleaved(runners, args.rounds, args.steps)
        # open_clip's last block computes every token: count its work on the full form.
        flops = {"clip_jax": tower_forward_flops(model, args.batch, tower),
                 "open_clip": tower_forward_flops(model.clone(full_last_block=True), args.batch, tower)}
        for name, times in seconds.items():
            line = (f"{tower:5s} {name:10s} {args.batch / times['wall']:9.1f} embeddings/s "
                    f"({times['wall'] * 1e3:8.1f} ms/batch, {times['cpu'] * 1e3:8.1f} CPU-ms/batch)")
            if peak and tower == "image":  # text work depends on the trimmed length
                line += f"  {flops[name] / times['wall'] / peak:6.1%} of the {peak_name}"
            print(line)
        if theirs:
            wall = seconds["open_clip"]["wall"] / seconds["clip_jax"]["wall"]
            cpu = seconds["open_clip"]["cpu"] / seconds["clip_jax"]["cpu"]
            print(f"{tower:5s} clip_jax / open_clip: {wall:.2f}x (wall clock), {cpu:.2f}x (per CPU-second)")


if __name__ == "__main__":
    main()
