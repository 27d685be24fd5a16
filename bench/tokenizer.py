"""Tokenizer throughput: clip_jax's BPE against open_clip's, measured in the same run.

    python bench/tokenizer.py [--captions 20000]

Captions are varied synthetic strings (the parity test's generator) plus realistic
prompts; both tokenizers see the same list, cold (empty BPE cache) and warm.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402,F401  (the import order; the repository root on the path)

from clip_jax.tokenizers.bpe import BPETokenizer  # noqa: E402
from tests.helpers.text import varied_strings  # noqa: E402


def rate(fn, captions) -> float:
    start = time.perf_counter()
    fn(captions)
    return len(captions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--captions", type=int, default=20_000)
    args = parser.parse_args()
    import open_clip

    prompts = [
        f"a photo of a {w} number {i}, taken outdoors."
        for i, w in enumerate(["dog", "cat", "car"] * (args.captions // 6 + 1))
    ]
    captions = (varied_strings(args.captions // 2, seed=1) + prompts)[: args.captions]
    ours = BPETokenizer()
    theirs = open_clip.tokenizer.SimpleTokenizer()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(captions)} captions")
    for label in ("cold", "warm"):
        a, b = rate(ours, captions), rate(theirs, captions)
        print(f"{label}: clip_jax {a:,.0f} captions/s, open_clip {b:,.0f} captions/s, ratio {a / b:.2f}x")


if __name__ == "__main__":
    main()
