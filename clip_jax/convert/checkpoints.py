"""Load any CLIP checkpoint into clip_jax, and export to open_clip and Hugging Face.

Read formats (detected from the file's bytes, not its name):
  * OpenAI's TorchScript archives and any `torch.save` state dict (open_clip's .pt
    with or without a 'state_dict' wrapper or DDP 'module.' prefixes, .bin files),
    read as data without torch and without executing anything from the file;
  * safetensors state dicts (open_clip .safetensors) and clip_jax's own files;
  * Hugging Face CLIPModel and SiglipModel folders (config.json + model.safetensors or
    pytorch_model.bin, sharded or not) and big_vision's SigLIP .npz files
    (clip_jax.convert.siglip);
  * clip_jax training workdirs (the newest checkpoint; parameters only).
The clip_jax format is one safetensors file: Flax variable paths joined by '/',
with the architecture as JSON in the file's metadata.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Mapping

import numpy as np

from clip_jax.convert import hf, siglip
from clip_jax.convert.openai import infer_config, state_dict_to_variables, variables_to_state_dict
from clip_jax.convert.safetensors_io import is_safetensors, load_safetensors, save_safetensors
from clip_jax.convert.torch_archive import (
    CheckpointFormatError,
    OpaqueObject,
    flatten_tensors,
    is_torch_zip,
    load_torch_zip,
)
from clip_jax.models import CLIP, CLIPConfig, create_model, get_config

EXPORT_FORMATS = ("clip_jax", "open_clip", "hf")
NATIVE_FORMAT_TAG = "clip_jax"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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


def read_checkpoint(path: str, name: str | None = None) -> tuple[CLIPConfig, dict]:
    """(architecture, Flax variables) of a checkpoint; see the module docstring."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    named = get_config(name) if name is not None else None
    if os.path.isdir(path):
        from clip_jax import train_checkpoints  # imports Orbax: only for directories

        step_dir = train_checkpoints.find_step_dir(path)
        if step_dir is not None:
            saved_config, variables = train_checkpoints.read_model(step_dir)
            config = CLIPConfig.from_dict(saved_config)
            if named is not None and named != config:
                raise ValueError(f"{step_dir} holds architecture {config}, which differs from {name!r}: {named}")
            return config, variables
        if not os.path.exists(os.path.join(path, "config.json")):
            raise CheckpointFormatError(
                f"{path}: a directory that is neither a Hugging Face CLIPModel/SiglipModel folder (config.json) "
                "nor a clip_jax training workdir (checkpoints/<step>/)"
            )
        config = named or hf.read_config(path)
        sd = _read_hf_folder(path)
        sd = siglip.pack_qkv(sd) if config.family == "siglip" else hf.hf_to_openai(sd)
        return config, state_dict_to_variables(sd, config)
    if is_safetensors(path):
        tensors, metadata = load_safetensors(path)
        if metadata.get("format") == NATIVE_FORMAT_TAG:
            stored = CLIPConfig.from_json(metadata["config"])
            if named is not None and named != stored:
                raise ValueError(f"{path} holds architecture {stored}, which differs from {name!r}: {named}")
            return stored, _unflatten(tensors)
        sd = tensors
    elif is_torch_zip(path):
        sd = _state_dict_of(load_torch_zip(path), path)
    elif _is_npz(path):
        with np.load(path, allow_pickle=False) as arrays:
            if not siglip.is_big_vision_npz(arrays.files):
                raise CheckpointFormatError(f"{path}: a NumPy .npz file without big_vision SigLIP parameters "
                                            f"(img/..., txt/...); holds {arrays.files[:8]}")
            sd = siglip.npz_to_hf({k: arrays[k] for k in arrays.files})
    else:
        raise CheckpointFormatError(_describe_unreadable(path))
    if siglip.is_siglip_state_dict(sd):
        sd = siglip.pack_qkv(sd)
        config = named or siglip.infer_config(sd)
        return config, state_dict_to_variables(sd, config)
    if hf.is_hf_state_dict(sd):
        sd = hf.hf_to_openai(sd)
    config = named or infer_config(sd)
    return config, state_dict_to_variables(sd, config)


def load_checkpoint(path: str, name: str | None = None, **options) -> tuple[CLIP, dict]:
    """(model, variables) of any supported checkpoint.

    name: a registered architecture; None infers it from tensor shapes (OpenAI's
    build_model rule).  options go to `create_model` (dtype, remat, act).
    """
    config, variables = read_checkpoint(path, name)
    return create_model(config, **options), variables


def export_checkpoint(model: CLIP, variables: Mapping, path: str, format: str = "clip_jax") -> str:
    """Write `variables` of `model` as `format`; returns the path written.

    clip_jax: one .safetensors file; open_clip: a state dict open_clip loads with
    `pretrained=path` (.safetensors, or .pt/.bin through torch when it is installed);
    hf: a folder transformers' CLIPModel.from_pretrained loads.
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
        sd = variables_to_state_dict(variables, model.config)
        if path.endswith(".safetensors"):
            save_safetensors(path, sd, {"format": "pt"})
        elif path.endswith((".pt", ".pth", ".bin")):
            try:
                import torch
            except ImportError:
                raise ValueError(f"writing {path} needs torch; use a .safetensors path instead") from None
            torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
        else:
            raise ValueError(f"open_clip export path {path!r} must end in .safetensors, .pt, .pth or .bin")
        return path
    if format == "hf":
        sd = variables_to_state_dict(variables, model.config)
        sd = siglip.unpack_qkv(sd) if model.config.family == "siglip" else hf.openai_to_hf(sd)
        os.makedirs(path, exist_ok=True)
        hf.write_config(path, model.config, float(np.asarray(variables["params"]["logit_scale"])))
        save_safetensors(os.path.join(path, "model.safetensors"), sd, {"format": "pt"})
        return path
    raise ValueError(f"unknown export format {format!r}; valid: {', '.join(EXPORT_FORMATS)}")
