"""Reading checkpoints: one table of readers (`READERS`), each a test on the path and a
function giving a `Loaded` (architecture, variables, the scoring rule it records, the
assumption it had to make), tried in order.  Formats are told by their bytes and
layout, not their names.

Where the architecture comes from: the architecture asked for (`chosen`) when given;
else the checkpoint's own description (clip_jax metadata, a training workdir's,
config.json, open_clip_config.json); else tensor shapes, through the family whose names
the state dict uses (`Family.recognises`, `Family.infer_config`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import numpy as np

from clip_jax import classifier, lora
from clip_jax.convert import big_vision, hf, open_clip_folder
from clip_jax.convert.placement import place_tree
from clip_jax.convert.safetensors_io import is_safetensors, load_safetensors
from clip_jax.convert.state_dict_files import describe_unreadable, is_npz, read_state_dict_file, state_dict_of
from clip_jax.convert.table import Placement, normalize_state_dict, state_dict_to_variables
from clip_jax.convert.torch_archive import CheckpointFormatError, OpaqueObject, is_torch_zip, load_torch_zip
from clip_jax.models import FAMILIES, CLIPConfig, check_config, family_of

NATIVE_FORMAT_TAG = "clip_jax"  # the "format" of clip_jax's own safetensors metadata


@dataclasses.dataclass
class Loaded:
    config: CLIPConfig
    variables: dict
    scoring: str | None = None  # the scoring rule the checkpoint records; None: not recorded
    warning: str | None = None  # an assumption made that the user should know of


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def _same_as_chosen(found: CLIPConfig, chosen: CLIPConfig | None, where: str) -> CLIPConfig:
    if chosen is not None and chosen != found:
        raise ValueError(f"{where} holds architecture {found}, which differs from the one asked for: {chosen}")
    return found


def _family_of_names(sd: Mapping) -> object:
    """The family whose parameter names these are; else the first registered one, whose
    shape inference then says which key is missing."""
    return next((f for f in FAMILIES.values() if f.recognises(sd)), next(iter(FAMILIES.values())))


def _inferred(family, sd: dict) -> CLIPConfig:
    config = family.infer_config(sd)
    try:
        check_config(config)
    except ValueError as error:
        raise ValueError(
            f"the architecture read from tensor shapes, with 64-wide attention heads, is not valid ({error}); "
            "shapes do not show the heads: give the architecture with config= (an open_clip model-config JSON or "
            "dimensions) or name=") from None
    return config


def from_state_dict(sd: Mapping[str, np.ndarray], path: str, chosen: CLIPConfig | None,
                    described: CLIPConfig | None = None, place: Placement | None = None) -> Loaded:
    """A bare state dict's model: named by `chosen`, `described` (what the file itself
    says), an open_clip_config.json beside it, or else its shapes."""
    sd = normalize_state_dict(sd)
    known = chosen or described
    if known is not None:
        family = family_of(known)
    else:
        family = _family_of_names(sd)
    sd = family.own_names(sd)
    folder = os.path.dirname(os.path.abspath(path))
    if known is None and "open_clip" in family.export_formats and open_clip_folder.has_config(folder):
        described = open_clip_folder.read_config(folder)
        try:
            return Loaded(described, state_dict_to_variables(sd, described, place))
        except ValueError as error:
            raise ValueError(f"{path} does not fit {open_clip_folder.config_path(folder)} beside it; pass config= or "
                             f"name= to load it with another architecture. {error}") from None
    config = known or _inferred(family, sd)
    warning = None if known is not None else family.shape_inference_warning(path, config)
    return Loaded(config, state_dict_to_variables(sd, config, place), warning=warning)


def _placed(variables: dict, config: CLIPConfig, place: Placement | None) -> dict:
    return place_tree(variables, place(config) if place is not None else None)


def _placed_with_head(variables: dict, config: CLIPConfig, place: Placement | None) -> dict:
    """`_placed`, with a classification fine-tune's head (variables["head"]) kept beside
    the model's variables as host arrays."""
    model_variables = {k: v for k, v in variables.items() if k != classifier.HEAD}
    head = {classifier.HEAD: place_tree(variables[classifier.HEAD], None)} if classifier.HEAD in variables else {}
    return {**_placed(model_variables, config, place), **head}


# -- one reader per layout ---------------------------------------------------------------


def _is_workdir(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    from clip_jax import train_checkpoints  # Orbax: imported only for folders

    return train_checkpoints.find_step_dir(path) is not None


def _read_workdir(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    from clip_jax import train_checkpoints  # Orbax: imported only for training workdirs

    step_dir = train_checkpoints.find_step_dir(path)
    meta, variables = train_checkpoints.read_model(step_dir)
    config = _same_as_chosen(CLIPConfig.from_dict(meta["model_config"]), chosen, step_dir)
    if lora.ADAPTERS in variables["params"]:  # a LoRA run's adapters, folded into plain weights
        variables = {**variables, "params": lora.folded(variables["params"], meta["lora_scale"], xp=np)}
    # Orbax restores arrays of their own: only placing them is left to do.
    return Loaded(config, _placed_with_head(classifier.split_head(variables), config, place),
                  scoring=meta.get("scoring"))


def _open_clip_weights(path: str) -> str | None:
    """The weights open_clip's layout names in a folder, when they win over a Hugging Face
    layout beside them (LAION's repositories hold both; open_clip's config names the activation)."""
    if not os.path.isdir(path) or not open_clip_folder.has_config(path):
        return None
    weights = open_clip_folder.find_weights(path)
    if weights and (not hf.is_folder(path) or os.path.basename(weights).startswith("open_clip")):
        return weights
    return None


def _read_open_clip_folder(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    config = chosen or open_clip_folder.read_config(path)
    sd = family_of(config).own_names(normalize_state_dict(read_state_dict_file(_open_clip_weights(path))))
    return Loaded(config, state_dict_to_variables(sd, config, place))


def _read_hf_folder(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    config = chosen or hf.read_config(path)
    sd = family_of(config).own_names(normalize_state_dict(hf.read_weights(path)))
    return Loaded(config, state_dict_to_variables(sd, config, place))


def _unknown_folder(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    classes = "/".join(family.hf_architecture for family in FAMILIES.values() if family.hf_architecture)
    raise CheckpointFormatError(
        f"{path}: a directory that is neither a Hugging Face {classes} folder (config.json), an "
        f"open_clip folder ({open_clip_folder.CONFIG_FILE} with weights) nor a clip_jax training workdir "
        "(checkpoints/<step>/)")


def _read_safetensors(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    tensors, metadata = load_safetensors(path)
    if metadata.get("format") == NATIVE_FORMAT_TAG:  # clip_jax's own: Flax paths and the architecture
        config = _same_as_chosen(CLIPConfig.from_json(metadata["config"]), chosen, path)
        return Loaded(config, _placed_with_head(unflatten(tensors), config, place), scoring=metadata.get("scoring"))
    return from_state_dict(tensors, path, chosen, place=place)


def _read_torch(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    obj = load_torch_zip(path)
    sd = state_dict_of(obj, path)
    described = None
    if isinstance(obj, OpaqueObject) and chosen is None:  # OpenAI's TorchScript archives: OpenAI's models, QuickGELU
        own = normalize_state_dict(sd)
        family = _family_of_names(own)
        described = dataclasses.replace(_inferred(family, family.own_names(own)), act="quick_gelu")
    return from_state_dict(sd, path, chosen, described, place)


def _read_npz(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    with np.load(path, allow_pickle=False) as arrays:
        if not big_vision.is_big_vision_npz(arrays.files):
            raise CheckpointFormatError(f"{path}: a NumPy .npz file without big_vision SigLIP parameters "
                                        f"(img/..., txt/...); holds {arrays.files[:8]}")
        sd = big_vision.npz_to_hf({k: arrays[k] for k in arrays.files})
    return from_state_dict(sd, path, chosen, place=place)


def _unreadable(path: str, chosen: CLIPConfig | None, place: Placement | None) -> Loaded:
    raise CheckpointFormatError(describe_unreadable(path))


# (what it reads, does this path hold it, read it); the first match reads the path.
READERS: list[tuple[str, Callable[[str], bool], Callable[[str, CLIPConfig | None, Placement | None], Loaded]]] = [
    ("clip_jax training workdir", _is_workdir, _read_workdir),
    ("open_clip hub folder", lambda p: _open_clip_weights(p) is not None, _read_open_clip_folder),
    ("Hugging Face folder", lambda p: os.path.isdir(p) and hf.is_folder(p), _read_hf_folder),
    ("other folder", os.path.isdir, _unknown_folder),
    ("safetensors file", is_safetensors, _read_safetensors),
    ("torch archive", is_torch_zip, _read_torch),
    ("big_vision .npz", is_npz, _read_npz),
    ("anything else", lambda p: True, _unreadable),
]


def read(path: str, chosen: CLIPConfig | None, place: Placement | None = None) -> Loaded:
    """The first reader that holds `path` reads it; `place` puts each leaf where it
    belongs as it is built (placement.py; None: host arrays)."""
    for _, holds, reader in READERS:
        if holds(path):
            return reader(path, chosen, place)
    raise AssertionError("the last reader takes every path")
