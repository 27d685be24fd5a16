"""The vocabulary families use to say how their parameters are named in other projects'
files: `Row`s (one torch state-dict key <-> one Flax path, with the layout change), the
small row builders every family needs, and the keys that transformers' CLIP and SigLIP
configs share.  clip_jax.convert.table applies the rows, for import and export
alike, so the two directions cannot drift apart.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import numpy as np

from clip_jax.models.architecture import TextConfig, VisionConfig


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # torch state-dict key
    collection: str  # "params" or "batch_stats"
    path: tuple[str, ...]  # path inside the collection
    layout: str = "copy"  # "copy", "linear" (transpose), "conv" (OIHW <-> HWIO), "scalar" ([1] <-> [])
    layer: int | None = None  # index along the scanned layer axis


def layer_norm_rows(key: str, path: tuple[str, ...], layer: int | None = None) -> Iterator[Row]:
    yield Row(key + ".weight", "params", path + ("scale",), layer=layer)
    yield Row(key + ".bias", "params", path + ("bias",), layer=layer)


def linear_rows(key: str, path: tuple[str, ...], layer: int | None = None) -> Iterator[Row]:
    yield Row(key + ".weight", "params", path + ("kernel",), "linear", layer)
    yield Row(key + ".bias", "params", path + ("bias",), layer=layer)


def shapes_text(state_dict: Mapping[str, np.ndarray], keys) -> str:
    """'key (shape), ...' for messages about tensors that do not fit."""
    return ", ".join(f"{k} {tuple(np.shape(state_dict[k]))}" for k in sorted(keys)) or "none"


def contiguous(array) -> np.ndarray:
    """A C-contiguous copy or view that keeps 0-d arrays 0-d (np.ascontiguousarray does not)."""
    return np.require(np.asarray(array), requirements="C")


def vision_config_from_hf(vision: Mapping, default_patch_size: int) -> VisionConfig:
    """The ViT of a transformers `vision_config` dict (CLIP's and SigLIP's share the keys;
    the defaults are transformers' base models')."""
    width = vision.get("hidden_size", 768)
    return VisionConfig(
        image_size=vision.get("image_size", 224),
        width=width,
        layers=vision.get("num_hidden_layers", 12),
        patch_size=vision.get("patch_size", default_patch_size),
        head_width=width // vision.get("num_attention_heads", 12),
        mlp_ratio=vision.get("intermediate_size", 3072) / width,
    )


def vision_config_to_hf(vision: VisionConfig) -> dict:
    """The ViT's keys of a transformers `vision_config` (the inverse of `vision_config_from_hf`)."""
    return {
        "hidden_size": vision.width,
        "intermediate_size": vision.mlp_dim,
        "num_hidden_layers": vision.layers,
        "num_attention_heads": vision.num_heads,
        "image_size": vision.image_size,
        "patch_size": vision.patch_size,
        "num_channels": 3,
    }


def text_config_from_hf(text: Mapping, defaults: Mapping, **fields) -> TextConfig:
    """The text tower of a transformers `text_config` dict; `defaults` are the transformers
    config class's own defaults for keys the dict leaves out; `fields` set the rest."""
    get = lambda key: text.get(key, defaults[key])  # noqa: E731
    width = get("hidden_size")
    return TextConfig(context_length=get("max_position_embeddings"), vocab_size=get("vocab_size"), width=width,
                      heads=get("num_attention_heads"), layers=get("num_hidden_layers"),
                      mlp_ratio=get("intermediate_size") / width, **fields)


def text_config_to_hf(text: TextConfig) -> dict:
    """The keys of a transformers `text_config` that CLIP's and SigLIP's share."""
    return {
        "vocab_size": text.vocab_size,
        "hidden_size": text.width,
        "intermediate_size": text.mlp_dim,
        "num_hidden_layers": text.layers,
        "num_attention_heads": text.heads,
        "max_position_embeddings": text.context_length,
    }


def pack_qkv_parts(parts: Mapping[str, np.ndarray], where: str) -> np.ndarray:
    """q, k and v projection tensors packed into one (q | k | v rows), as the Flax blocks hold them."""
    if set(parts) != {"q", "k", "v"}:
        raise ValueError(f"{where}: q/k/v projections incomplete, found only {sorted(parts)}")
    return np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
