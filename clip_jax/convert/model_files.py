"""Model files in and out: load any CLIP or SigLIP checkpoint into clip_jax, and export to
open_clip, Hugging Face and clip_jax files.

Read formats (detected from the file's bytes, not its name):
  * OpenAI's TorchScript archives and any `torch.save` state dict (open_clip's .pt
    with or without a 'state_dict' wrapper or DDP 'module.' prefixes, .bin files),
    read as data without torch and without executing anything from the file;
  * safetensors state dicts (open_clip .safetensors) and clip_jax's own files;
  * Hugging Face CLIPModel and SiglipModel folders (config.json + model.safetensors or
    pytorch_model.bin, sharded or not) and big_vision's SigLIP .npz files
    (clip_jax.convert.siglip);
  * open_clip's Hugging Face hub folders (open_clip_config.json beside
    open_clip_model.safetensors or open_clip_pytorch_model.bin), and any state-dict file
    with an open_clip_config.json beside it;
  * clip_jax training workdirs (the newest checkpoint; parameters only).
The clip_jax format is one safetensors file: Flax variable paths joined by '/',
with the architecture as JSON in the file's metadata.

Where the architecture comes from: `name=` or `config=` when given (`resolve_config`:
a registered name, dimensions, an open_clip model-config JSON); else the file's own
description (clip_jax metadata, a training workdir's, HF's config.json,
open_clip_config.json); else tensor shapes.  Shapes cannot tell QuickGELU from GELU, so
for a bare state dict the activation is assumed (OpenAI's QuickGELU, or GELU for the
LAION-only ViT-H/g shapes) and one warning says so, unless `act=` settles it.  OpenAI's
TorchScript archives are OpenAI's models: QuickGELU, no warning.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile
from typing import Any, Mapping

import numpy as np

from clip_jax.convert import hf, open_clip_folder, siglip
from clip_jax.convert.openai import infer_config, state_dict_to_variables, variables_to_state_dict
from clip_jax.convert.safetensors_io import is_safetensors, load_safetensors, save_safetensors
from clip_jax.convert.torch_archive import (
    CheckpointFormatError,
    OpaqueObject,
    flatten_tensors,
    is_torch_zip,
    load_torch_zip,
)
from clip_jax.models import CLIP, CLIPConfig, create_model, name_of, resolve_config

EXPORT_FORMATS = ("clip_jax", "open_clip", "hf")
NATIVE_FORMAT_TAG = "clip_jax"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

log = logging.getLogger(__name__)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = np.asarray(value)
    return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def _state_dict_of(obj: Any, path: str) -> dict[str, np.ndarray]:
    """The parameter dict inside whatever a torch file holds."""
    if isinstance(obj, OpaqueObject):  # a TorchScript module (OpenAI's archives)
        return flatten_tensors(obj)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj.get(wrapper), dict):
                return _state_dict_of(obj[wrapper], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if tensors:
            return tensors
    raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__} with no tensors; not a model checkpoint")


def _describe_unreadable(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_LEGACY_TORCH_MAGIC[:2]) and head[2:3] == b"\x8a":
        return (f"{path}: a legacy (pre-1.6) torch pickle, which clip_jax does not unpickle; "
                "re-save it with torch.save from torch >= 1.6, or as safetensors")
    if not head:
        return f"{path}: empty file; not a checkpoint"
    return (f"{path}: not a checkpoint clip_jax reads (expected a torch zip archive, a safetensors "
            f"file or a Hugging Face folder; file starts with {head!r})")


def _is_npz(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)


def _read_hf_folder(folder: str) -> dict[str, np.ndarray]:
    index = next((os.path.join(folder, f"{w}.index.json") for w in _HF_WEIGHT_FILES
                  if os.path.exists(os.path.join(folder, f"{w}.index.json"))), None)
    if index:
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = [w for w in _HF_WEIGHT_FILES if os.path.exists(os.path.join(folder, w))][:1]
    if not files:
        raise CheckpointFormatError(f"{folder}: Hugging Face folder without {' or '.join(_HF_WEIGHT_FILES)}")
    sd: dict[str, np.ndarray] = {}
    for name in files:
        sd.update(_read_state_dict_file(os.path.join(folder, name)))
    return sd


def _read_state_dict_file(path: str) -> dict[str, np.ndarray]:
    if is_safetensors(path):
        return load_safetensors(path)[0]
    if is_torch_zip(path):
        return _state_dict_of(load_torch_zip(path), path)
    raise CheckpointFormatError(_describe_unreadable(path))


def _activation_warning(path: str, config: CLIPConfig) -> str:
    assumed = ("QuickGELU (OpenAI's activation)" if config.act == "quick_gelu"
               else "GELU (as the LAION models of these shapes)")
    name = name_of(config)
    label = f"the {name} architecture" if name else "custom shapes, with OpenAI's 64-wide attention heads"
    return (f"{path}: a bare state dict does not say which activation its model was trained with, and tensor "
            f"shapes cannot tell QuickGELU from GELU; assuming {assumed} for {label}. Choose explicitly with "
            f"name= (an open_clip name such as 'ViT-B-32' is GELU, 'ViT-B-32-quickgelu' and OpenAI's 'ViT-B/32' "
            f"are QuickGELU) or act='gelu' / act='quick_gelu'"
            + ("" if name else ", or give the whole architecture with config= (an open_clip model-config JSON)") + ".")


def _read_state_dict(path: str, chosen: CLIPConfig | None) -> tuple[CLIPConfig, dict, str | None]:
    """(architecture, variables, the activation warning or None) of a state-dict file."""
    described = None
    if is_safetensors(path):
        tensors, metadata = load_safetensors(path)
        if metadata.get("format") == NATIVE_FORMAT_TAG:
            stored = CLIPConfig.from_json(metadata["config"])
            if chosen is not None and chosen != stored:
                raise ValueError(f"{path} holds architecture {stored}, which differs from the one asked for: {chosen}")
            return stored, _unflatten(tensors), None
        sd = tensors
    elif is_torch_zip(path):
        obj = load_torch_zip(path)
        sd = _state_dict_of(obj, path)
        if isinstance(obj, OpaqueObject):  # a TorchScript archive: OpenAI's model, QuickGELU
            described = dataclasses.replace(infer_config(sd), act="quick_gelu")
    elif _is_npz(path):
        with np.load(path, allow_pickle=False) as arrays:
            if not siglip.is_big_vision_npz(arrays.files):
                raise CheckpointFormatError(f"{path}: a NumPy .npz file without big_vision SigLIP parameters "
                                            f"(img/..., txt/...); holds {arrays.files[:8]}")
            sd = siglip.npz_to_hf({k: arrays[k] for k in arrays.files})
    else:
        raise CheckpointFormatError(_describe_unreadable(path))
    if siglip.is_siglip_state_dict(sd):  # shapes tell SigLIP's architecture, activation included
        sd = siglip.pack_qkv(sd)
        config = chosen or siglip.infer_config(sd)
        return config, state_dict_to_variables(sd, config), None
    if hf.is_hf_state_dict(sd):
        sd = hf.hf_to_openai(sd)
    folder = os.path.dirname(os.path.abspath(path))
    if chosen is None and described is None and open_clip_folder.has_config(folder):
        described = open_clip_folder.read_config(folder)
        try:
            return described, state_dict_to_variables(sd, described), None
        except ValueError as error:
            raise ValueError(f"{path} does not fit {open_clip_folder.config_path(folder)} beside it; pass config= or "
                             f"name= to load it with another architecture. {error}") from None
    config = chosen or described or infer_config(sd)
    warning = None if chosen is not None or described is not None else _activation_warning(path, config)
    return config, state_dict_to_variables(sd, config), warning


def read_checkpoint(path: str, name: str | None = None, config: Any = None,
                    act: str | None = None) -> tuple[CLIPConfig, dict]:
    """(architecture, Flax variables) of a checkpoint; see the module docstring.

    name / config: the architecture, when the checkpoint does not describe it (any spec
    `resolve_config` takes; config may be an open_clip model-config JSON path); act:
    "quick_gelu" or "gelu", overriding the activation."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if name is not None and config is not None:
        raise ValueError(f"give the architecture by name= or by config=, not both (got {name!r} and {config!r})")
    spec = name if name is not None else config
    chosen = resolve_config(spec) if spec is not None else None
    warning = None
    if os.path.isdir(path):
        architecture, variables = _read_folder(path, chosen)
    else:
        architecture, variables, warning = _read_state_dict(path, chosen)
    if act is not None:
        architecture = resolve_config(dataclasses.replace(architecture, act=act))
    elif warning:
        log.warning(warning)
    return architecture, variables


def _read_folder(path: str, chosen: CLIPConfig | None) -> tuple[CLIPConfig, dict]:
    from clip_jax import train_checkpoints  # imports Orbax: only for directories

    step_dir = train_checkpoints.find_step_dir(path)
    if step_dir is not None:
        saved, variables = train_checkpoints.read_model(step_dir)
        config = CLIPConfig.from_dict(saved)
        if chosen is not None and chosen != config:
            raise ValueError(f"{step_dir} holds architecture {config}, which differs from the one asked for: {chosen}")
        return config, variables
    open_clip_weights = open_clip_folder.find_weights(path) if open_clip_folder.has_config(path) else None
    hf_folder = os.path.exists(os.path.join(path, "config.json"))
    # A hub folder may hold both layouts (LAION's repositories do); open_clip's files win
    # when they are there, as their config names the activation.
    if open_clip_weights and (not hf_folder or os.path.basename(open_clip_weights).startswith("open_clip")):
        config = chosen or open_clip_folder.read_config(path)
        sd = _read_state_dict_file(open_clip_weights)
        return config, state_dict_to_variables(hf.hf_to_openai(sd) if hf.is_hf_state_dict(sd) else sd, config)
    if not hf_folder:
        raise CheckpointFormatError(
            f"{path}: a directory that is neither a Hugging Face CLIPModel/SiglipModel folder (config.json), an "
            f"open_clip folder ({open_clip_folder.CONFIG_FILE} with weights) nor a clip_jax training workdir "
            "(checkpoints/<step>/)"
        )
    config = chosen or hf.read_config(path)
    sd = _read_hf_folder(path)
    sd = siglip.pack_qkv(sd) if config.family == "siglip" else hf.hf_to_openai(sd)
    return config, state_dict_to_variables(sd, config)


def load_checkpoint(path: str, name: str | None = None, config: Any = None, **options) -> tuple[CLIP, dict]:
    """(model, variables) of any supported checkpoint.

    name: a registered architecture; config: dimensions, an open_clip model-config JSON
    path or any other spec `resolve_config` takes; both None: the checkpoint's own
    description, else tensor shapes (OpenAI's build_model rule; the activation is then
    assumed and a warning says so).  options go to `create_model` (dtype, remat, act).
    """
    architecture, variables = read_checkpoint(path, name, config, act=options.pop("act", None))
    return create_model(architecture, **options), variables


def export_checkpoint(model: CLIP, variables: Mapping, path: str, format: str = "clip_jax") -> str:
    """Write `variables` of `model` as `format`; returns the path written.

    clip_jax: one .safetensors file; open_clip: a state dict (.safetensors, or .pt/.pth/.bin
    through torch when it is installed) with open_clip_config.json beside it, or, for a path
    without those suffixes, a folder in open_clip's hub layout (open_clip_config.json +
    open_clip_model.safetensors); open_clip loads either with
    `create_model("local-dir:FOLDER")` and clip_jax with `load_checkpoint(path)`, no name
    needed; hf: a folder transformers' CLIPModel.from_pretrained loads.
    """
    path = os.fspath(path)
    variables = {k: v for k, v in variables.items()}
    if format == "clip_jax":
        save_safetensors(path, _flatten(variables),
                         {"format": NATIVE_FORMAT_TAG, "config": model.config.to_json()})
        return path
    if format == "open_clip":
        if model.config.family == "siglip":
            raise ValueError("SigLIP models export as 'hf' (a SiglipModel folder) or 'clip_jax', not 'open_clip'")
        folder, weights = ((os.path.dirname(os.path.abspath(path)), path) if path.endswith(_STATE_DICT_SUFFIXES)
                           else (path, os.path.join(path, open_clip_folder.WEIGHTS_FILE)))
        sd = variables_to_state_dict(variables, model.config)
        torch = None
        if not weights.endswith(".safetensors"):
            try:
                import torch
            except ImportError:
                raise ValueError(f"writing {weights} needs torch; use a .safetensors path instead") from None
        open_clip_folder.check_config_slot(folder, model.config)  # before anything is written
        os.makedirs(folder, exist_ok=True)
        if torch is None:
            save_safetensors(weights, sd, {"format": "pt"})
        else:
            torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, weights)
        open_clip_folder.write_config(folder, model.config)
        return path
    if format == "hf":
        sd = variables_to_state_dict(variables, model.config)
        sd = siglip.unpack_qkv(sd) if model.config.family == "siglip" else hf.openai_to_hf(sd)
        os.makedirs(path, exist_ok=True)
        hf.write_config(path, model.config, float(np.asarray(variables["params"]["logit_scale"])))
        save_safetensors(os.path.join(path, "model.safetensors"), sd, {"format": "pt"})
        return path
    raise ValueError(f"unknown export format {format!r}; valid: {', '.join(EXPORT_FORMATS)}")
