"""The command line: python -m clip_jax.search index|query|classify|serve|info ...

    python -m clip_jax.search index DIR --checkpoint CKPT --index INDEX   # create, or update incrementally
    python -m clip_jax.search query INDEX "a red bicycle" -k 20 [--json] [--sheet hits.jpg]
    python -m clip_jax.search query INDEX --image q.jpg [--plus "at night"]
    python -m clip_jax.search classify INDEX --labels "cat,dog,car" [--out labels.csv]
    python -m clip_jax.search serve INDEX [--port 8000] [--host 127.0.0.1]
    python -m clip_jax.search info INDEX        # size, model, skipped files

Errors in what was asked (a missing folder, another model's checkpoint, a bad option)
print one line naming the problem and exit with status 2.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from clip_jax.pretrained import DownloadError
from clip_jax.search.index import ANN_MODES, METHODS, Index, ModelMismatchError
from clip_jax.search.store import DTYPES, SearchIndexError


def _templates(value: str | None) -> list[str] | None:
    if not value:
        return None
    from clip_jax.evaluation.prompts import resolve_templates

    return resolve_templates(value)


def _labels(value: str) -> list[str]:
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    else:
        labels = [label.strip() for label in value.split(",") if label.strip()]
    if not labels:
        raise ValueError(f"--labels {value!r}: no labels (give 'cat,dog,car' or a file with one label a line)")
    return labels


def _open(args, writable: bool = False) -> Index:
    return Index.open(args.index, args.checkpoint, name=args.name, writable=writable)


def cmd_index(args) -> int:
    index = Index.build(args.folder, args.index, args.checkpoint, name=args.name, dtype=args.dtype, ann=args.ann,
                        batch_size=args.batch_size, chunk_size=args.chunk_size, workers=args.workers,
                        progress=not args.no_progress)
    with index:
        report = index.report()
    rate = f", {report['images_per_second']} images/s" if report["embedded"] and report["images_per_second"] else ""
    print(f"{report['images']:,} images indexed in {args.index}: {report['embedded']:,} embedded from "
          f"{report['new']:,} new and {report['changed']:,} changed files{rate}; {report['unchanged']:,} unchanged, "
          f"{report['removed']:,} removed; {len(report['skipped']):,} skipped as unreadable")
    for item in report["skipped"][: args.show_skipped]:
        print(f"  skipped {item['path']}: {item['reason']}")
    if len(report["skipped"]) > args.show_skipped:
        more = len(report["skipped"]) - args.show_skipped
        print(f"  ... and {more} more in {os.path.join(args.index, 'report.json')}")
    return 0


def cmd_query(args) -> int:
    if args.text is None and args.image is None:
        raise ValueError("give a query text, or --image FILE (with optional --plus TEXT)")
    if args.plus is not None and args.image is None:
        raise ValueError("--plus adds a text to an --image query; without --image, put the words in the query text")
    with _open(args) as index:
        hits = index.search(args.text, image=args.image, plus=args.plus, k=args.k, templates=_templates(args.templates),
                            method=args.method)
        if args.sheet:
            from clip_jax.search.sheet import contact_sheet

            title = " + ".join(part for part in (args.text, args.image and f"image {args.image}", args.plus) if part)
            contact_sheet(hits, args.sheet, title=title)
    if args.json:
        print(json.dumps([dict(rank=rank + 1, **hit.as_dict()) for rank, hit in enumerate(hits)], indent=1))
    else:
        for rank, hit in enumerate(hits):
            print(f"{rank + 1:>4}  {hit.score:.4f}  {hit.file}")
    if args.sheet:
        print(f"contact sheet: {args.sheet}", file=sys.stderr)
    return 0


def cmd_classify(args) -> int:
    labels = _labels(args.labels)
    with _open(args) as index:
        rows = index.classify(labels, templates=_templates(args.templates))
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out != "-" else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "score"])
        writer.writerows((path, label, f"{score:.6f}") for path, label, score in rows)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out != "-":
        counts = {label: 0 for label in labels}
        for _, label, _ in rows:
            counts[label] += 1
        print(f"{len(rows):,} images labelled into {args.out}: "
              + ", ".join(f"{label} {n:,}" for label, n in counts.items()), file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from clip_jax.search.server import serve

    with _open(args) as index:
        index.encoder  # load the model now: a missing checkpoint fails here, not at the first query
        serve(index, host=args.host, port=args.port)
    return 0


def cmd_info(args) -> int:
    with Index.open(args.index) as index:
        manifest, skipped, report = index.manifest, index.skipped(), index.report()
        info = {"index": index.path, "root": index.root, "images": index.store.count(), "skipped": len(skipped),
                "dtype": manifest["dtype"], "embed_dim": manifest["embed_dim"], "model": manifest["model"]["name"],
                "fingerprint": manifest["model"]["fingerprint"], "checkpoint": manifest["model"]["checkpoint"],
                "ann": manifest["ann"], "last_update": report and report["finished"]}
    if args.json:
        print(json.dumps(dict(info, skipped_files=skipped), indent=1))
    else:
        for key, value in info.items():
            print(f"{key:>12}: {value}")
        for path, reason in sorted(skipped.items()):
            print(f"  skipped {path}: {reason}")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m clip_jax.search", description=__doc__.split("\n\n")[0])
    commands = main.add_subparsers(dest="command", required=True)

    def model_options(p, required: bool = False):
        default = "" if required else " (default: the one the index recorded)"
        p.add_argument("--checkpoint", required=required, default=None,
                       help="any checkpoint clip_jax.load_checkpoint reads: a file or folder, "
                       "hf-hub:ORG/NAME, or a pretrained NAME:TAG" + default)
        p.add_argument("--name", default=None, help="architecture name when tensor shapes cannot tell (e.g. ViT-B-32)")

    p = commands.add_parser("index", help="index a folder of images (incremental: reruns embed only what changed)")
    p.add_argument("folder")
    p.add_argument("--index", required=True, help="the index folder (created if missing)")
    model_options(p)
    p.add_argument("--dtype", choices=DTYPES, default=None, help="feature dtype on disk (new index: float16)")
    p.add_argument("--ann", choices=ANN_MODES, default=None,
                   help="approximate-search index: auto (above 100,000 images), on, off (new index: auto)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=1024, help="images per durable chunk")
    p.add_argument("--workers", type=int, default=None, help="image-reading threads (default: up to 8)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--show-skipped", type=int, default=20, help="skipped files to list")
    p.set_defaults(run=cmd_index)

    p = commands.add_parser("query", help="search an index by text and/or example image")
    p.add_argument("index")
    p.add_argument("text", nargs="?", default=None)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--image", default=None, help="an example image file")
    p.add_argument("--plus", default=None, help="a text added to --image (e.g. 'at night')")
    p.add_argument("--templates", default=None,
                   help="prompt ensemble: a shipped key (e.g. imagenet_simple), a file, or 'a photo of {}.'")
    p.add_argument("--method", choices=METHODS, default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sheet", default=None, help="write a contact sheet of the hits (e.g. hits.jpg)")
    model_options(p)
    p.set_defaults(run=cmd_query)

    p = commands.add_parser("classify", help="zero-shot label every image: CSV of path, label, score")
    p.add_argument("index")
    p.add_argument("--labels", required=True, help="'cat,dog,car' or a file with one label a line")
    p.add_argument("--templates", default=None, help="as for query")
    p.add_argument("--out", default="-", help="CSV file (default: standard output)")
    model_options(p)
    p.set_defaults(run=cmd_classify)

    p = commands.add_parser("serve", help="a web page and JSON API over the index")
    p.add_argument("index")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    model_options(p)
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("info", help="what an index holds")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (SearchIndexError, ModelMismatchError, FileNotFoundError, FileExistsError, NotADirectoryError,
            ValueError, KeyError, DownloadError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
