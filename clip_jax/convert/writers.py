"""Writing checkpoints: one table of writers (`WRITERS`, by export format), each taking
(model, variables, path) and returning the path written.  Which formats a model can be
written as is its family's (`Family.export_formats`).
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

import numpy as np

from clip_jax import classifier
from clip_jax.convert import hf, open_clip_folder
from clip_jax.convert.readers import NATIVE_FORMAT_TAG
from clip_jax.convert.safetensors_io import save_safetensors
from clip_jax.convert.table import variables_to_state_dict
from clip_jax.models import family_of

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = np.asarray(value)
    return flat


def write_clip_jax(model, variables: Mapping, path: str) -> str:
    """One .safetensors file: Flax paths joined by '/', the architecture and scoring rule
    in its metadata."""
    save_safetensors(path, flatten(variables), {"format": NATIVE_FORMAT_TAG, "config": model.config.to_json(),
                                                "scoring": model.scoring_rule.name})
    return path


def write_open_clip(model, variables: Mapping, path: str) -> str:
    """A state dict (.safetensors, or .pt/.pth/.bin through torch when it is installed)
    with open_clip_config.json beside it, or, for a path without those suffixes, a folder
    in open_clip's hub layout (open_clip_config.json + open_clip_model.safetensors)."""
    folder, weights = ((os.path.dirname(os.path.abspath(path)), path) if path.endswith(STATE_DICT_SUFFIXES)
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


def write_hf(model, variables: Mapping, path: str) -> str:
    """A folder transformers loads (CLIPModel / SiglipModel .from_pretrained)."""
    family = family_of(model)
    sd = family.hf_names(variables_to_state_dict(variables, model.config))
    os.makedirs(path, exist_ok=True)
    hf.write_config(path, model.config, float(np.asarray(variables["params"]["logit_scale"])))
    save_safetensors(os.path.join(path, "model.safetensors"), sd, {"format": "pt"})
    return path


WRITERS: dict[str, Callable[..., str]] = {"clip_jax": write_clip_jax, "open_clip": write_open_clip, "hf": write_hf}
FORMAT_NOTES = {"hf": "a {architecture} folder"}  # how a format is described in messages


def write(model, variables: Mapping, path: str, format: str) -> str:
    if format not in WRITERS:
        raise ValueError(f"unknown export format {format!r}; valid: {', '.join(WRITERS)}")
    if classifier.HEAD in variables and format != "clip_jax":
        raise ValueError(f"these variables hold a classification head (a cross_entropy fine-tune's), which only "
                         f"the 'clip_jax' format stores, not {format!r}; export as 'clip_jax', or drop the head "
                         "(clip_jax.classifier.model_variables) to export the model alone")
    family = family_of(model)
    if format not in family.export_formats:
        valid = " or ".join(f"{f!r}" + (f" ({FORMAT_NOTES[f].format(architecture=family.hf_architecture)})"
                                         if f in FORMAT_NOTES else "") for f in family.export_formats)
        raise ValueError(f"{family.title} models export as {valid}, not {format!r}")
    if format != "clip_jax" and model.scoring_rule.name != family.scoring:
        raise ValueError(f"this {family.title} model scores with the {model.scoring_rule.name!r} rule (it was trained "
                         f"with that loss), which {format!r} files cannot record; export it as 'clip_jax'")
    return WRITERS[format](model, dict(variables), os.fspath(path))
