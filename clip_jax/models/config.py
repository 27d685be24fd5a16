"""Architecture descriptions: plain frozen dataclasses, hashable so a model can hold
one, and convertible to and from JSON for checkpoints.

Two families share these types (`CLIPConfig.family`):
  * "clip": OpenAI's CLIP (ViT or ModifiedResNet image tower, causal text tower pooled
    at EOT, bias-free projections, LayerNorm eps 1e-5);
  * "siglip": SigLIP and SigLIP 2 (ViT without class token or ln_pre, patch conv with
    bias, attention-pooling (MAP) head whose output is the image embedding; bidirectional
    text tower pooled at the last position with a linear head with bias; a learned logit
    bias; LayerNorm eps 1e-6; GELU tanh approximation).  embed_dim is the image width.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    width: int = 768
    # An int is a ViT depth; a 4-tuple is a ModifiedResNet's blocks per stage.
    layers: int | tuple[int, int, int, int] = 12
    patch_size: Optional[int] = 32  # None for a ModifiedResNet
    head_width: int = 64
    mlp_ratio: float = 4.0

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.layers, tuple)

    @property
    def num_heads(self) -> int:
        # A ResNet's attention pool works on 32 * width features.
        features = self.width * 32 if self.is_resnet else self.width
        return features // self.head_width

    @property
    def mlp_dim(self) -> int:
        return round(self.width * self.mlp_ratio)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    # The tokenizer the model was trained with: "bpe" (CLIP's, shipped with clip_jax),
    # "siglip" (SigLIP's SentencePiece model) or "gemma" (SigLIP 2's); see clip_jax.tokenizers.
    tokenizer: str = "bpe"

    @property
    def mlp_dim(self) -> int:
        return round(self.width * self.mlp_ratio)


FAMILIES = ("clip", "siglip")
TOKENIZERS = ("bpe", "siglip", "gemma")
LAYER_NORM_EPS = {"clip": 1e-5, "siglip": 1e-6}


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    act: str = "quick_gelu"  # "quick_gelu" (OpenAI), "gelu" (LAION), "gelu_tanh" (SigLIP)
    family: str = "clip"  # "clip" or "siglip" (the module docstring)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if self.text.tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.text.tokenizer!r}; valid: {', '.join(TOKENIZERS)}")
        if self.family == "siglip":
            if self.vision.is_resnet:
                raise ValueError("a SigLIP image tower is a ViT; got ResNet layers " + str(self.vision.layers))
            if self.embed_dim != self.vision.width:
                raise ValueError(f"a SigLIP image embedding is the image tower's width ({self.vision.width}), "
                                 f"so embed_dim must equal it; got {self.embed_dim}")

    @property
    def layer_norm_eps(self) -> float:
        return LAYER_NORM_EPS[self.family]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "CLIPConfig":
        vision = dict(data["vision"])
        if isinstance(vision["layers"], (list, tuple)):
            vision["layers"] = tuple(vision["layers"])
        return cls(
            embed_dim=data["embed_dim"],
            vision=VisionConfig(**vision),
            text=TextConfig(**data["text"]),
            act=data.get("act", "quick_gelu"),
            family=data.get("family", "clip"),
        )

    @classmethod
    def from_json(cls, text: str) -> "CLIPConfig":
        return cls.from_dict(json.loads(text))
