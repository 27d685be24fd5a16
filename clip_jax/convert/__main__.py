"""Convert a CLIP checkpoint between formats.

    python -m clip_jax.convert SRC DST --to clip_jax|open_clip|hf [--name ViT-B/32 | --config CFG.json] [--act gelu]

SRC is anything `clip_jax.load_checkpoint` reads (OpenAI .pt, open_clip .pt/.bin/
.safetensors, an open_clip or Hugging Face folder, a clip_jax file or training workdir,
hf-hub:ORG/NAME, or a pretrained NAME:TAG such as ViT-B-32:laion2b_s34b_b79k).
DST is a .safetensors file for clip_jax; for open_clip a .safetensors file (or .pt when
torch is installed) with open_clip_config.json written beside it, or a folder in
open_clip's hub layout; a folder for hf.
"""
from __future__ import annotations

import argparse
import sys

from clip_jax.convert.model_files import EXPORT_FORMATS, export_checkpoint, load_checkpoint
from clip_jax.models import available_models, name_of
from clip_jax.pretrained import DownloadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_jax.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="checkpoint to read: a file or folder, hf-hub:ORG/NAME or NAME:TAG")
    parser.add_argument("dst", help="path to write")
    parser.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="output format")
    parser.add_argument("--name", default=None,
                        help="architecture name (default: inferred from tensor shapes); one of: "
                        + ", ".join(available_models()))
    parser.add_argument("--config", default=None,
                        help="architecture as an open_clip model-config JSON file (as open_clip's "
                        "model_configs/*.json, or an open_clip_config.json), instead of --name")
    parser.add_argument("--act", default=None, choices=("quick_gelu", "gelu"),
                        help="override the MLP activation (shapes cannot tell QuickGELU from GELU)")
    args = parser.parse_args(argv)
    options = {"act": args.act} if args.act else {}
    try:
        model, variables = load_checkpoint(args.src, args.name, args.config, **options)
        written = export_checkpoint(model, variables, args.dst, args.to)
    except (ValueError, FileNotFoundError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    label = name_of(model.config) or "custom architecture"
    print(f"{args.src} ({label}, act={model.config.act}) -> {written} [{args.to}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
