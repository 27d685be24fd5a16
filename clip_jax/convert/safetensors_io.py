"""Read safetensors files into NumPy, bfloat16 included (safetensors' own NumPy
reader rejects bfloat16), with errors that say what is wrong with a bad file.
Writing goes through the safetensors package.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from clip_jax.convert.torch_archive import CheckpointFormatError
from clip_jax.models.families.naming import contiguous

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
MAX_HEADER_BYTES = 100 * 2**20


def read_header(path: str) -> tuple[int, dict]:
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointFormatError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise CheckpointFormatError(f"{path}: safetensors header of {length} bytes is implausible; corrupt file?")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointFormatError(f"{path}: safetensors header is not valid JSON; corrupt file?") from None
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{path}: safetensors header is not a JSON object")
    return 8 + length, header


def is_safetensors(path: str) -> bool:
    try:
        read_header(path)
        return True
    except (CheckpointFormatError, OSError):
        return False


def load_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    offset, header = read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    # Mapped, not read: a tensor's bytes are read when it is converted, and a large
    # checkpoint never sits whole in memory beside its converted copy.
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset) if os.path.getsize(path) > offset else b""
    tensors = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(DTYPES[info["dtype"]])
            start, end = info["data_offsets"]
            shape = tuple(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointFormatError(f"{path}: malformed entry for tensor {name!r}: {info!r:.200}") from None
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - start != expected or end > len(data) or start < 0:
            raise CheckpointFormatError(
                f"{path}: tensor {name!r} {shape} {info['dtype']} needs bytes [{start}, {end}) "
                f"but the file holds {len(data)} data bytes (truncated file?)"
            )
        # A read-only view of the file's bytes: converting copies once, not twice.
        tensors[name] = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize,
                                      offset=start).reshape(shape)
    return tensors, metadata


def save_safetensors(path: str, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    save_file({k: contiguous(v) for k, v in tensors.items()}, path, metadata=metadata)
