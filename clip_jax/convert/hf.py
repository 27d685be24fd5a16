"""Hugging Face model folders (config.json beside model.safetensors or pytorch_model.bin,
sharded or not): the config read and written through the family whose transformers
model_type it is (`Family.config_from_hf` / `config_to_hf`), and the weights read as one
state dict in Hugging Face's names.
"""
from __future__ import annotations

import json
import os

import numpy as np

from clip_jax.convert.state_dict_files import read_state_dict_file
from clip_jax.convert.torch_archive import CheckpointFormatError
from clip_jax.models import FAMILIES, CLIPConfig, family_of
from clip_jax.pretrained import layouts

CONFIG_FILE = layouts.HF_CONFIG
WEIGHT_FILES = layouts.HF_WEIGHTS
DEFAULT_MODEL_TYPE = "clip"  # transformers' CLIPConfig files once had no model_type


def is_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def read_config(folder: str) -> CLIPConfig:
    """The architecture of a Hugging Face folder, by its config.json's model_type."""
    path = os.path.join(folder, CONFIG_FILE)
    with open(path) as f:
        config = json.load(f)
    model_type = config.get("model_type") or DEFAULT_MODEL_TYPE
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family.config_from_hf(config, path, folder)
    known = [t for family in FAMILIES.values() for t in family.hf_model_types]
    raise ValueError(f"{path}: model_type {model_type!r} is not one clip_jax reads; supported: {', '.join(known)}")


def write_config(folder: str, config: CLIPConfig, logit_scale: float) -> None:
    with open(os.path.join(folder, CONFIG_FILE), "w") as f:
        json.dump(family_of(config).config_to_hf(config, logit_scale), f, indent=2)


def read_weights(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of a Hugging Face folder (all shards of a sharded one)."""
    index = next((os.path.join(folder, layouts.index_file(w)) for w in WEIGHT_FILES
                  if os.path.exists(os.path.join(folder, layouts.index_file(w)))), None)
    if index:
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = [w for w in WEIGHT_FILES if os.path.exists(os.path.join(folder, w))][:1]
    if not files:
        raise CheckpointFormatError(f"{folder}: Hugging Face folder without {' or '.join(WEIGHT_FILES)}")
    sd: dict[str, np.ndarray] = {}
    for name in files:
        sd.update(read_state_dict_file(os.path.join(folder, name)))
    return sd
