"""Architecture descriptions: plain frozen dataclasses, hashable so a model can hold
one, and convertible to and from JSON for checkpoints.
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


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    act: str = "quick_gelu"  # "quick_gelu" (OpenAI) or "gelu" (open_clip's LAION models)

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
        )

    @classmethod
    def from_json(cls, text: str) -> "CLIPConfig":
        return cls.from_dict(json.loads(text))
