"""Host-to-device bytes per train step and device, float32 against uint8 images:

    python bench/transfer_bytes.py [--image_size 224] [--batch 256]

Reads one batch of `--batch` examples (a batch per device) from the training pipeline on
the demo data, resized to --image_size, both ways, and prints the bytes of each array the
step receives.  The shapes, not the pixels, set the figure.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402,F401  (the import order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    from clip_jax import data

    sizes = {}
    for uint8 in (False, True):
        with data.train_iterator("demo:train", batch_size=args.batch, image_size=args.image_size, seed=0,
                                 shuffle_buffer=args.batch, uint8_images=uint8) as iterator:
            batch = next(iterator)
        sizes[uint8] = {k: (v.dtype, v.shape, v.nbytes) for k, v in batch.items()}
        total = sum(n for _, _, n in sizes[uint8].values())
        parts = ", ".join(f"{k} {d} {list(s)} {n / 2**20:.2f} MiB" for k, (d, s, n) in sizes[uint8].items())
        print(f"{'uint8  ' if uint8 else 'float32'} images: {total / 2**20:8.2f} MiB per step and device ({parts})")
    before, after = (sum(n for _, _, n in sizes[u].values()) for u in (False, True))
    print(f"uint8 sends {after / before:.1%} of the float32 bytes ({before / after:.2f}x fewer)")


if __name__ == "__main__":
    main()
