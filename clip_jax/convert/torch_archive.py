"""Read PyTorch zip archives (`torch.save` files and TorchScript archives) as data.

Only tensors, containers and plain values are rebuilt, into NumPy arrays.  Every
other global a pickle names becomes an inert `OpaqueObject` that records its name and
arguments: nothing from the file is imported or called, so a checkpoint crafted to
run code when unpickled cannot run it here.  torch is not needed.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

# torch storage class name -> NumPy dtype of its elements.
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


class CheckpointFormatError(ValueError):
    """A file that is not a checkpoint clip_jax can read, with the reason."""


class OpaqueObject:
    """Stands in for any object of a class the reader does not rebuild."""

    def __init__(self, qualified_name: str, args: tuple = ()):
        self.qualified_name = qualified_name
        self.args = args
        self.state: Any = None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"OpaqueObject({self.qualified_name})"


def _opaque_class(qualified_name: str) -> type:
    """A class whose construction only records its arguments."""

    def new(cls, *args, **kwargs):
        return OpaqueObject(qualified_name, args)

    return type("Opaque", (), {"__new__": new, "qualified_name": qualified_name})


class _Storage:
    def __init__(self, data: np.ndarray):
        self.data = data


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(f"tensor refers to a storage of unexpected type {type(storage).__name__}")
    flat = storage.data
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(flat[storage_offset])
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, flat.dtype)
    if needed > flat.size:
        raise CheckpointFormatError(
            f"tensor of shape {size} needs {needed} elements but its storage holds {flat.size} (truncated file?)"
        )
    contiguous = tuple(int(np.prod(size[i + 1:], dtype=np.int64)) for i in range(len(size)))
    if all(s == c for n, s, c in zip(size, stride, contiguous) if n > 1):
        # The common case: a read-only view of the file's bytes, no copy.
        count = int(np.prod(size, dtype=np.int64))
        return flat[storage_offset : storage_offset + count].reshape(size)
    view = np.lib.stride_tricks.as_strided(
        flat[storage_offset:], shape=size, strides=[s * flat.itemsize for s in stride]
    )
    return np.array(view)


def _first_arg(value, *_unused):
    return value


def _rebuild_from_type(func, _new_type, args, _state):
    return func(*args)


# (module, name) -> a harmless function or type rebuilding plain data.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _first_arg,
    ("torch._utils", "_rebuild_parameter_with_state"): _first_arg,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.jit._pickle", "restore_type_tag"): _first_arg,
    ("torch.jit._pickle", "build_intlist"): _first_arg,
    ("torch.jit._pickle", "build_doublelist"): _first_arg,
    ("torch.jit._pickle", "build_boollist"): _first_arg,
    ("torch.jit._pickle", "build_tensorlist"): _first_arg,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and name in STORAGE_DTYPES:
            return ("storage_type", name)
        return _opaque_class(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r:.100} in torch archive")
        storage_type, key = pid[1], str(pid[2])
        if not (isinstance(storage_type, tuple) and storage_type[0] == "storage_type"):
            raise CheckpointFormatError(f"unsupported storage type {storage_type!r:.100}")
        if key not in self._storages:
            member = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(member)
            except KeyError:
                raise CheckpointFormatError(f"torch archive lacks tensor data {member!r} (truncated file?)") from None
            dtype = np.dtype(STORAGE_DTYPES[storage_type[1]])
            usable = len(raw) - len(raw) % dtype.itemsize
            self._storages[key] = _Storage(np.frombuffer(raw[:usable], dtype=dtype))
        return self._storages[key]


def is_torch_zip(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("data.pkl") for n in archive.namelist())


def load_torch_zip(path: str) -> Any:
    """Unpickle the object in a torch zip archive, tensors as NumPy arrays."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointFormatError(f"{path}: not a readable torch zip archive ({error})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointFormatError(f"{path}: zip archive without a data.pkl; not a torch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise CheckpointFormatError(f"{path}: big-endian torch archives are not supported")
        try:
            return _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix).load()
        except CheckpointFormatError:
            raise
        except Exception as error:  # malformed pickles raise many exception types
            raise CheckpointFormatError(f"{path}: corrupt torch archive ({type(error).__name__}: {error})") from None


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array reachable from dicts and TorchScript module records, dotted keys."""
    found: dict[str, np.ndarray] = {}
    if isinstance(obj, np.ndarray):
        found[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found.update(flatten_tensors(value, f"{prefix}{key}."))
    elif isinstance(obj, OpaqueObject) and isinstance(obj.state, dict):
        # A TorchScript module: its state maps attribute names to submodules and tensors.
        found.update(flatten_tensors(obj.state, prefix))
    return found
