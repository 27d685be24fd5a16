"""Naming an architecture: `resolve_config(spec) -> CLIPConfig`, the one place that turns
whatever names a model (a training config's `model`, `create_model`'s argument,
`load_checkpoint(config=...)`) into a checked `CLIPConfig`.

A spec is
  * a registered name: "ViT-B/32", "ViT-B-32" (open_clip's GELU config), "tiny-vit", ...;
  * dimensions, as a dict or ml_collections ConfigDict:
        embed_dim, act ("quick_gelu" | "gelu"),
        vision: image_size, width, layers, patch_size, head_width, mlp_ratio
        text:   context_length, vocab_size, width, heads, layers
    (missing keys take `CLIPConfig`'s defaults, ViT-B/32's; a 4-tuple vision.layers with
    patch_size None is a ModifiedResNet);
  * an open_clip model config: a dict with vision_cfg / text_cfg (open_clip's
    model_configs/*.json), or a Hugging Face hub open_clip_config.json's {"model_cfg": ...};
  * a path to a JSON file holding any of the last two (the only file read in models/);
  * a `CLIPConfig`.
Every result is checked by `check_config`: a clear error names the field and the valid
range (a width not divisible by the heads, an image size not divisible by the patch, ...).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from clip_jax.models.architecture import CLIPConfig, TextConfig, VisionConfig
from clip_jax.models.families import FAMILIES, get_family
from clip_jax.models.layers import ACTIVATIONS as _ACTIVATION_FUNCTIONS
from clip_jax.models.open_clip_config import from_open_clip, is_open_clip_config
from clip_jax.models.registry import MODELS, available_models, get_config

ACTIVATIONS = tuple(_ACTIVATION_FUNCTIONS)
_VISION_KEYS = tuple(f.name for f in dataclasses.fields(VisionConfig))
_TEXT_KEYS = tuple(f.name for f in dataclasses.fields(TextConfig))
_TOP_KEYS = ("embed_dim", "vision", "text", "act")


def _plain(spec: Any) -> Any:
    """ConfigDicts (and FrozenConfigDicts) as plain dicts, without importing ml_collections."""
    to_dict = getattr(spec, "to_dict", None)
    return to_dict() if callable(to_dict) and not isinstance(spec, CLIPConfig) else spec


def _unknown(section: Mapping, valid, where: str) -> None:
    extra = sorted(set(section) - set(valid))
    if extra:
        raise ValueError(f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(where + k for k in extra)} in the "
                         f"model dimensions; valid: {', '.join(where + k for k in valid)}")


def from_dimensions(data: Mapping[str, Any]) -> CLIPConfig:
    """A `CLIPConfig` from {embed_dim, act, vision: {...}, text: {...}} (see the module)."""
    _unknown(data, _TOP_KEYS, "")
    vision, text = dict(_plain(data.get("vision")) or {}), dict(_plain(data.get("text")) or {})
    _unknown(vision, _VISION_KEYS, "vision.")
    _unknown(text, _TEXT_KEYS, "text.")
    if isinstance(vision.get("layers"), list):
        vision["layers"] = tuple(vision["layers"])
    if isinstance(vision.get("layers"), tuple) and "patch_size" not in vision:
        vision["patch_size"] = None  # a ModifiedResNet
    base = CLIPConfig()
    return CLIPConfig(embed_dim=data.get("embed_dim", base.embed_dim), vision=VisionConfig(**vision),
                      text=TextConfig(**text), act=data.get("act", base.act))


def _from_mapping(data: Mapping[str, Any], source: str) -> CLIPConfig:
    if "model_cfg" in data:  # a Hugging Face hub open_clip_config.json
        return from_open_clip(_plain(data["model_cfg"]), source)
    if is_open_clip_config(data):
        return from_open_clip(data, source)
    return from_dimensions(data)


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a JSON {type(data).__name__}, not a model config object")
    return data


def resolve_config(spec: Any) -> CLIPConfig:
    """A checked `CLIPConfig` from a name, dimensions, an open_clip model config (dict or
    JSON path) or a `CLIPConfig`; see the module docstring."""
    spec = _plain(spec)
    if isinstance(spec, CLIPConfig):
        config = spec
    elif isinstance(spec, str):
        if spec in MODELS:
            config = get_config(spec)
        elif os.path.isfile(spec):
            config = _from_mapping(read_json(spec), spec)
        elif spec.endswith(".json"):
            raise FileNotFoundError(f"model config file {spec!r} does not exist")
        else:
            raise ValueError(f"unknown model {spec!r}: neither a registered name ({', '.join(available_models())}) "
                             "nor a path to an open_clip model-config JSON file")
    elif isinstance(spec, Mapping):
        config = _from_mapping(spec, "model config")
    else:
        raise TypeError(f"a model is named by a registered name, a dict of dimensions, an open_clip model-config "
                        f"(dict or JSON path) or a CLIPConfig; got {type(spec).__name__}")
    check_config(config)
    return config


def _positive_int(value, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r}: must be a positive integer")


def check_config(config: CLIPConfig) -> None:
    """ValueError naming the first field outside its valid range: the fields every family
    shares, then the family's own rules (clip_jax.models.families)."""
    family = get_family(config.family)
    tokenizers = sorted({kind for known in FAMILIES.values() for kind in known.tokenizers})
    if config.text.tokenizer not in tokenizers:
        raise ValueError(f"unknown tokenizer {config.text.tokenizer!r}; valid: {', '.join(tokenizers)}")
    if config.vision.tower not in family.tower_kinds:
        raise ValueError(f"vision.tower={config.vision.tower!r} (layers {config.vision.layers}): a {family.name} "
                         f"image tower is one of {', '.join(family.tower_kinds)}")
    _positive_int(config.embed_dim, "embed_dim")
    if config.act not in ACTIVATIONS:
        raise ValueError(f"act={config.act!r}: valid activations are {', '.join(ACTIVATIONS)}")
    v = config.vision
    for name in ("image_size", "width", "head_width"):
        _positive_int(getattr(v, name), f"vision.{name}")
    if v.is_resnet:
        _check_resnet(v)
    else:
        _check_vit(v, partial_patches=family.partial_patches)
    _check_text(config.text)
    family.check_config(config)


def _check_mlp_ratio(tower, where: str) -> None:
    if isinstance(tower.mlp_ratio, bool) or not isinstance(tower.mlp_ratio, (int, float)) or tower.mlp_dim < 1:
        raise ValueError(f"{where}.mlp_ratio={tower.mlp_ratio!r}: must be a number > 0 with width * mlp_ratio >= 1")


def _check_resnet(v) -> None:
    if len(v.layers) != 4:
        raise ValueError(f"vision.layers={v.layers}: a ModifiedResNet has 4 stages")
    for stage, blocks in enumerate(v.layers):
        _positive_int(blocks, f"vision.layers[{stage}]")
    if v.patch_size is not None:
        raise ValueError(f"vision.patch_size={v.patch_size}: a ModifiedResNet (4-tuple vision.layers) has no "
                         "patches; set it to None, or vision.layers to an int for a ViT")
    if v.image_size % 32:
        raise ValueError(f"vision.image_size={v.image_size}: a ModifiedResNet needs a multiple of 32")
    if (32 * v.width) % v.head_width:
        raise ValueError(f"vision.head_width={v.head_width}: must divide the attention pool's width "
                         f"32 * vision.width = {32 * v.width}")


def _check_vit(v, partial_patches: bool) -> None:
    _positive_int(v.layers, "vision.layers")
    _positive_int(v.patch_size, "vision.patch_size")
    # Some families' patch convolution drops a remainder (SigLIP so400m/14 at 384 px);
    # for the others a remainder is a mistake.
    if v.image_size % v.patch_size and not partial_patches:
        raise ValueError(f"vision.image_size={v.image_size} is not divisible by vision.patch_size={v.patch_size}: "
                         "the image must split into whole patches")
    if v.width % v.head_width:
        raise ValueError(f"vision.width={v.width} is not divisible by vision.head_width={v.head_width} "
                         f"(heads = width / head_width; e.g. head_width 64 needs a width in 64, 128, 192, ...)")
    _check_mlp_ratio(v, "vision")


def _check_text(t) -> None:
    for name in ("context_length", "vocab_size", "width", "heads", "layers"):
        _positive_int(getattr(t, name), f"text.{name}")
    if t.width % t.heads:
        raise ValueError(f"text.width={t.width} is not divisible by text.heads={t.heads} "
                         f"(each head has width / heads dimensions)")
    _check_mlp_ratio(t, "text")
