"""One file of tensors read as a state dict: safetensors files, and torch archives
(`torch.save` files and OpenAI's TorchScript ones, read as data without torch); a file
that is neither gets an error saying what it looks like.
"""
from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from clip_jax.convert.safetensors_io import is_safetensors, load_safetensors
from clip_jax.convert.torch_archive import (
    CheckpointFormatError,
    OpaqueObject,
    flatten_tensors,
    is_torch_zip,
    load_torch_zip,
)

_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def state_dict_of(obj: Any, path: str) -> dict[str, np.ndarray]:
    """The parameter dict inside whatever a torch file holds."""
    if isinstance(obj, OpaqueObject):  # a TorchScript module (OpenAI's archives)
        return flatten_tensors(obj)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(obj.get(wrapper), dict):
                return state_dict_of(obj[wrapper], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if tensors:
            return tensors
    raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__} with no tensors; not a model checkpoint")


def describe_unreadable(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_LEGACY_TORCH_MAGIC[:2]) and head[2:3] == b"\x8a":
        return (f"{path}: a legacy (pre-1.6) torch pickle, which clip_jax does not unpickle; "
                "re-save it with torch.save from torch >= 1.6, or as safetensors")
    if not head:
        return f"{path}: empty file; not a checkpoint"
    return (f"{path}: not a checkpoint clip_jax reads (expected a torch zip archive, a safetensors "
            f"file or a Hugging Face folder; file starts with {head!r})")


def is_npz(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)


def read_state_dict_file(path: str) -> dict[str, np.ndarray]:
    """The tensors of one safetensors or torch file."""
    if is_safetensors(path):
        return load_safetensors(path)[0]
    if is_torch_zip(path):
        return state_dict_of(load_torch_zip(path), path)
    raise CheckpointFormatError(describe_unreadable(path))
