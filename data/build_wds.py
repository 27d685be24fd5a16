"""python data/build_wds.py --out DIR/PREFIX (--captions FILE.csv|FILE.jsonl [--images DIR] | --from SPEC) \
[--per-shard 10000]

Builds WebDataset shards (key.jpg|png|webp|..., key.txt, key.json, key.cls) from
  --captions: a CSV or JSON-lines file of image paths and captions (columns/keys named by
              --image-key, default "image", and --caption-key, default "caption"; a JSON
              caption may be a list); paths are relative to --images (default: the file's folder);
  --from:     any dataset spec clip_jax.data reads, e.g. tfds:coco_captions:train,
              tfds:cifar10:test (labels become key.cls, class names go to classnames.txt),
              folder:/data/val, tfrecord:/data/*.tfrecord.
Image bytes are copied unchanged (no re-encoding).  Unreadable images and rows without a
caption are skipped and counted.  Prints the wds: spec of the result.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Iterator

import tensorflow as tf

from clip_jax.data import open_sources
from clip_jax.data.sources import FAULT_NONE, valid_caption
from clip_jax.data.wds_writer import ShardWriter, image_extension


def rows_from_captions(
    path: str, images: str, image_key: str, caption_key: str
) -> Iterator[tuple[bytes | None, list, int]]:
    with tf.io.gfile.GFile(path, "r") as f:
        if path.endswith((".jsonl", ".json")):
            records = (json.loads(line) for line in f if line.strip())
        else:
            records = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
        for number, record in enumerate(records, 1):
            if image_key not in record or caption_key not in record:
                raise ValueError(
                    f"{path} record {number} lacks {image_key!r} or {caption_key!r}; it has {sorted(record)}"
                )
            captions = record[caption_key]
            captions = captions if isinstance(captions, list) else [captions]
            try:
                with tf.io.gfile.GFile(os.path.join(images, record[image_key]), "rb") as image:
                    yield image.read(), captions, -1
            except (tf.errors.OpError, OSError):
                yield None, captions, -1


def rows_from_spec(spec: str) -> Iterator[tuple[bytes | None, list, int]]:
    for source in open_sources(spec):
        for raw in source.ordered().as_numpy_iterator():
            image = raw["image"] if raw["fault"] == FAULT_NONE else None
            yield image, [c.decode("utf-8") for c in raw["captions"]], int(raw["label"])


def build(rows, out: str, per_shard: int) -> tuple[ShardWriter, dict]:
    counts = {"written": 0, "skipped_images": 0, "skipped_captions": 0}
    with ShardWriter(out, per_shard) as writer:
        for index, (image, captions, label) in enumerate(rows):
            ext = image_extension(image) if image else None
            captions = [c for c in map(valid_caption, captions) if c is not None]
            if ext is None:
                counts["skipped_images"] += 1
                continue
            if not captions and label < 0:
                counts["skipped_captions"] += 1
                continue
            fields = {ext: image}
            if captions:
                fields["txt"] = captions[0]
                fields["json"] = json.dumps({"caption": captions[0], "captions": captions})
            if label >= 0:
                fields["cls"] = str(label)
            writer.write(f"{index:09d}", fields)
            counts["written"] += 1
    return writer, counts


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description="Build WebDataset shards.")
    parser.add_argument("--out", required=True, help="output prefix, e.g. /data/shards/train")
    parser.add_argument("--captions", help="CSV/TSV/JSONL file of image paths and captions")
    parser.add_argument("--images", help="folder the image paths are relative to (default: the captions file's folder)")
    parser.add_argument("--image-key", default="image")
    parser.add_argument("--caption-key", default="caption")
    parser.add_argument("--from", dest="spec", help="a dataset spec, e.g. tfds:coco_captions:train")
    parser.add_argument("--per-shard", type=int, default=10_000)
    args = parser.parse_args(argv)
    if bool(args.captions) == bool(args.spec):
        parser.error("give exactly one of --captions FILE or --from SPEC")
    if args.captions:
        if not tf.io.gfile.exists(args.captions):
            parser.error(f"--captions {args.captions!r} does not exist")
        images = args.images or os.path.dirname(os.path.abspath(args.captions))
        rows = rows_from_captions(args.captions, images, args.image_key, args.caption_key)
    else:
        rows = rows_from_spec(args.spec)
    writer, counts = build(rows, args.out, args.per_shard)
    if args.spec:
        from clip_jax.data import class_names

        names = class_names(args.spec)
        if names:
            with tf.io.gfile.GFile(os.path.join(os.path.dirname(args.out) or ".", "classnames.txt"), "w") as f:
                f.write("\n".join(names) + "\n")
    if not writer.shard_paths:
        print(f"nothing written: {counts}", file=sys.stderr)
        sys.exit(1)
    print(f"{counts}; spec: {writer.spec()}")
    return writer.spec()


if __name__ == "__main__":
    main()
