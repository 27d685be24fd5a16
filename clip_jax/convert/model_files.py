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
from typing import Any, Mapping

from jax.sharding import Mesh

from clip_jax.convert import readers, writers
from clip_jax.convert.placement import on_mesh
from clip_jax.convert.table import Placement
from clip_jax.models import CLIP, CLIPConfig, create_model, resolve_config
from clip_jax.pretrained.hub import is_hub_spec
from clip_jax.pretrained.locate import locate
from clip_jax.pretrained.table import get_pretrained

EXPORT_FORMATS = tuple(writers.WRITERS)

log = logging.getLogger(__name__)


def read_checkpoint(path: str, name: str | None = None, config: Any = None, act: str | None = None,
                    place: Placement | None = None, cache_dir: str | None = None) -> tuple[CLIPConfig, dict]:
    """(architecture, Flax variables) of a checkpoint; see the module docstring.

    path: a local file or folder, hf-hub:ORG/NAME, or a pretrained NAME:TAG (fetched into
    the cache first; clip_jax.pretrained).  name / config: the architecture, when the
    checkpoint does not describe it (any spec `resolve_config` takes; config may be an
    open_clip model-config JSON path); act: "quick_gelu" or "gelu", overriding the
    activation; place: where each leaf goes as it is read (placement.on_mesh)."""
    loaded = _read_model(path, name, config, act, place, cache_dir)
    return loaded.config, loaded.variables


def _read_model(path, name, config, act, place=None, cache_dir=None) -> readers.Loaded:
    """`read_checkpoint`'s result with the scoring rule the checkpoint records."""
    if name is not None and config is not None:
        raise ValueError(f"give the architecture by name= or by config=, not both (got {name!r} and {config!r})")
    located = locate(path, cache_dir)
    spec = name if name is not None else config
    if spec is None and located.row is not None:  # a pretrained row fixes architecture and activation
        spec = dataclasses.replace(resolve_config(located.row.architecture), act=act or located.row.act)
    loaded = readers.read(located.path, resolve_config(spec) if spec is not None else None, place)
    if act is not None:
        loaded.config = resolve_config(dataclasses.replace(loaded.config, act=act))
    elif loaded.warning:
        log.warning(loaded.warning)
    return loaded


def load_checkpoint(path: str, name: str | None = None, config: Any = None, *, mesh: Mesh | None = None,
                    cache_dir: str | None = None, **options) -> tuple[CLIP, dict]:
    """(model, variables) of any supported checkpoint.

    path: a local file or folder, hf-hub:ORG/NAME (open_clip hub layout, HF folder or
    big_vision .npz), or a pretrained NAME:TAG (clip_jax.list_pretrained()); downloads go
    to huggingface_hub's cache (hub files) or $CLIP_JAX_CACHE (URLs), or cache_dir.
    name: a registered architecture; config: dimensions, an open_clip model-config JSON
    path or any other spec `resolve_config` takes; both None: the checkpoint's own
    description, else tensor shapes (OpenAI's build_model rule; the activation is then
    assumed and a warning says so).  mesh: variables come back as global arrays sharded
    on it as the trainer shards them, each placed as it is read.  options go to
    `create_model` (dtype, remat, act, scoring).  The model scores as the checkpoint
    records (a clip_jax training run's loss), else as its family does.
    """
    place = on_mesh(mesh) if mesh is not None else None
    loaded = _read_model(path, name, config, options.pop("act", None), place, cache_dir)
    scoring = loaded.scoring
    if scoring is None and "logit_bias" in loaded.variables.get("params", {}):
        scoring = "sigmoid"  # saved before the rule was recorded: only that rule has the bias
    options.setdefault("scoring", scoring)
    return create_model(loaded.config, **options), loaded.variables


def load_pretrained(name: str, tag: str | None = None, *, cache_dir: str | None = None, mesh: Mesh | None = None,
                    **options) -> tuple[CLIP, dict]:
    """(model, variables) of a pretrained checkpoint by name, as open_clip names them:
    `load_pretrained("ViT-B-32", "laion2b_s34b_b79k")`, `load_pretrained("google/siglip-base-patch16-224")`
    (tag optional when a name has one), or `load_pretrained("hf-hub:ORG/NAME")`.

    Downloaded once into the cache (cache_dir, else huggingface_hub's and
    $CLIP_JAX_CACHE), verified, then read as `load_checkpoint` reads it; mesh and
    options as there.  The row's preprocessing: `clip_jax.get_pretrained(name, tag).preprocessing`.
    """
    if is_hub_spec(name):
        if tag is not None:
            raise ValueError(f"{name} is a hub repository; it takes no tag (got {tag!r})")
        return load_checkpoint(name, mesh=mesh, cache_dir=cache_dir, **options)
    row = get_pretrained(name, tag)
    return load_checkpoint(row.spec, mesh=mesh, cache_dir=cache_dir, **options)


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
