"""Model files in and out: load any CLIP or SigLIP checkpoint into clip_jax, and export to
open_clip, Hugging Face and clip_jax files.  The formats are tables: readers.py (in) and
writers.py (out); this module is the public face of both.

Read formats (detected from the file's bytes, not its name):
  * OpenAI's TorchScript archives and any `torch.save` state dict (open_clip's .pt
    with or without a 'state_dict' wrapper or DDP 'module.' prefixes, .bin files),
    read as data without torch and without executing anything from the file;
  * safetensors state dicts (open_clip .safetensors) and clip_jax's own files;
  * Hugging Face CLIPModel and SiglipModel folders (config.json + model.safetensors or
    pytorch_model.bin, sharded or not) and big_vision's SigLIP .npz files;
  * open_clip's Hugging Face hub folders (open_clip_config.json beside
    open_clip_model.safetensors or open_clip_pytorch_model.bin), and any state-dict file
    with an open_clip_config.json beside it;
  * clip_jax training workdirs (the newest checkpoint; parameters only).
The clip_jax format is one safetensors file: Flax variable paths joined by '/',
with the architecture and scoring rule as JSON in the file's metadata.

Where the architecture comes from: `name=` or `config=` when given (`resolve_config`:
a registered name, dimensions, an open_clip model-config JSON); else the file's own
description (clip_jax metadata, a training workdir's, HF's config.json,
open_clip_config.json); else tensor shapes.  Shapes cannot tell QuickGELU from GELU, so
for a bare CLIP state dict the activation is assumed (OpenAI's QuickGELU, or GELU for the
LAION-only ViT-H/g shapes) and one warning says so, unless `act=` settles it.  OpenAI's
TorchScript archives are OpenAI's models: QuickGELU, no warning.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping

from clip_jax.convert import readers, writers
from clip_jax.models import CLIP, CLIPConfig, create_model, resolve_config

EXPORT_FORMATS = tuple(writers.WRITERS)

log = logging.getLogger(__name__)


def read_checkpoint(path: str, name: str | None = None, config: Any = None,
                    act: str | None = None) -> tuple[CLIPConfig, dict]:
    """(architecture, Flax variables) of a checkpoint; see the module docstring.

    name / config: the architecture, when the checkpoint does not describe it (any spec
    `resolve_config` takes; config may be an open_clip model-config JSON path); act:
    "quick_gelu" or "gelu", overriding the activation."""
    loaded = _read_model(path, name, config, act)
    return loaded.config, loaded.variables


def _read_model(path, name, config, act) -> readers.Loaded:
    """`read_checkpoint`'s result with the scoring rule the checkpoint records."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if name is not None and config is not None:
        raise ValueError(f"give the architecture by name= or by config=, not both (got {name!r} and {config!r})")
    spec = name if name is not None else config
    loaded = readers.read(path, resolve_config(spec) if spec is not None else None)
    if act is not None:
        loaded.config = resolve_config(dataclasses.replace(loaded.config, act=act))
    elif loaded.warning:
        log.warning(loaded.warning)
    return loaded


def load_checkpoint(path: str, name: str | None = None, config: Any = None, **options) -> tuple[CLIP, dict]:
    """(model, variables) of any supported checkpoint.

    name: a registered architecture; config: dimensions, an open_clip model-config JSON
    path or any other spec `resolve_config` takes; both None: the checkpoint's own
    description, else tensor shapes (OpenAI's build_model rule; the activation is then
    assumed and a warning says so).  options go to `create_model` (dtype, remat, act,
    scoring).  The model scores as the checkpoint records (a clip_jax training run's
    loss), else as its family does.
    """
    loaded = _read_model(path, name, config, options.pop("act", None))
    scoring = loaded.scoring
    if scoring is None and "logit_bias" in loaded.variables.get("params", {}):
        scoring = "sigmoid"  # saved before the rule was recorded: only that rule has the bias
    options.setdefault("scoring", scoring)
    return create_model(loaded.config, **options), loaded.variables


def export_checkpoint(model: CLIP, variables: Mapping, path: str, format: str = "clip_jax") -> str:
    """Write `variables` of `model` as `format`; returns the path written.

    clip_jax: one .safetensors file; open_clip: a state dict (.safetensors, or .pt/.pth/.bin
    through torch when it is installed) with open_clip_config.json beside it, or, for a path
    without those suffixes, a folder in open_clip's hub layout (open_clip_config.json +
    open_clip_model.safetensors); open_clip loads either with
    `create_model("local-dir:FOLDER")` and clip_jax with `load_checkpoint(path)`, no name
    needed; hf: a folder transformers' CLIPModel.from_pretrained loads.
    """
    return writers.write(model, variables, path, format)
