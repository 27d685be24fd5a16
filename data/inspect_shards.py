"""python data/inspect_shards.py 'wds:/data/shards-{00000..00099}.tar' [--samples 3] [--max-shards N]

Reads a WebDataset shard set (any spec works) and prints: examples, faults (broken
shards, missing or unreadable images), examples without a valid caption, image formats,
captions per example, caption length in characters and in CLIP BPE tokens (share over 77
tokens), label count, and a few sample captions.  Images are not decoded (fast).
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from clip_jax.data import open_sources
from clip_jax.data.sources import FAULT_IMAGE, FAULT_SHARD
from clip_jax.data.wds_writer import image_extension
from clip_jax.tokenizers.bpe import default_tokenizer


def inspect(spec: str, samples: int = 3, max_shards: int | None = None) -> dict:
    tokenizer = default_tokenizer()
    counts = collections.Counter()
    formats = collections.Counter()
    chars, tokens, per_example, labels, shown = [], [], [], set(), []
    for source in open_sources(spec):
        if max_shards:
            source.units = source.units[:max_shards]
        counts["units"] += len(source.units)
        for raw in source.ordered().as_numpy_iterator():
            if raw["fault"] == FAULT_SHARD:
                counts["broken_shards"] += 1
                continue
            counts["examples"] += 1
            if raw["fault"] == FAULT_IMAGE:
                counts["missing_images"] += 1
            else:
                formats[_format(raw["image"])] += 1
            captions = [c.decode("utf-8") for c in raw["captions"]]
            per_example.append(len(captions))
            if not captions:
                counts["no_valid_caption"] += 1
            for caption in captions:
                chars.append(len(caption))
                tokens.append(len(tokenizer.encode(caption)) + 2)
            if raw["label"] >= 0:
                labels.add(int(raw["label"]))
            if len(shown) < samples and captions:
                shown.append(captions[0])
    report = {
        **counts,
        "image_formats": dict(formats),
        "captions_per_example": _summary(per_example),
        "caption_chars": _summary(chars),
        "caption_tokens": _summary(tokens),
        "share_over_77_tokens": float(np.mean(np.array(tokens) > 77)) if tokens else 0.0,
        "distinct_labels": len(labels),
        "samples": shown,
    }
    return report


def _format(data: bytes) -> str:
    return image_extension(data) or "unknown"


def _summary(values) -> dict:
    if not values:
        return {}
    v = np.asarray(values)
    return {
        "min": int(v.min()),
        "mean": round(float(v.mean()), 2),
        "p50": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "max": int(v.max()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Inspect a shard set.")
    parser.add_argument("spec")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--max-shards", type=int, default=None)
    args = parser.parse_args(argv)
    report = inspect(args.spec, args.samples, args.max_shards)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report


if __name__ == "__main__":
    main()
