"""The ViT half of a transformers model config (`vision_config` in config.json): the keys
CLIPConfig and SiglipConfig share, read into and written from clip_jax's VisionConfig.
A module of its own so that both converters (hf.py, siglip.py) import it; hf.py imports
siglip.py, so neither can hold it for the other.
"""
from __future__ import annotations

from typing import Mapping

from clip_jax.models.config import VisionConfig


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
