"""python data/make_demo_shards.py --out /tmp/demo [--split train] [--n 100000] [--per-shard 10000] [--size 32]

Writes the synthetic demo split (clip_jax.data.demo) as WebDataset shards (key.png,
key.txt, key.cls, key.json with the attributes), so the demo can also run through the
`wds:` path; prints the spec to use.  Same pixels and captions as `demo:SPLIT`.
"""
from __future__ import annotations

import argparse
import json
import os

from clip_jax.data import demo
from clip_jax.data.wds_writer import ShardWriter


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default="train", choices=sorted(demo.SPLITS))
    parser.add_argument("--n", type=int, default=None, help="examples (default: the split's size)")
    parser.add_argument("--per-shard", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=demo.DEFAULT_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dataset = demo.DemoDataset(args.split, image_size=args.size, num_examples=args.n, seed=args.seed)
    with ShardWriter(os.path.join(args.out, f"demo-{args.split}"), args.per_shard) as writer:
        for index in range(len(dataset)):
            example = dataset.example(index)
            writer.write(f"{index:09d}", {
                "png": example["png"], "txt": example["caption"], "cls": str(example["label"]),
                "json": json.dumps(example["attributes"]),
            })
    print(f"wrote {writer.count} examples to {len(writer.shard_paths)} shards: {writer.spec()}")
    return writer.spec()


if __name__ == "__main__":
    main()
