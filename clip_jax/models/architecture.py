"""Architecture descriptions: plain frozen dataclasses, hashable so a model can hold
one, and convertible to and from JSON for checkpoints.

Every family (`CLIPConfig.family`, clip_jax/models/families/: "clip", "siglip") shares
these types; what differs between families beyond the dimensions (towers, LayerNorm eps,
preprocessing, tokens, scoring) is decided by the family object, not here.  They are
plain data: `clip_jax.models.resolve.check_config` (which `resolve_config` and
`create_model` run) checks a config, the family's own rules included.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

TOWER_KINDS = ("vit", "resnet")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    width: int = 768
    # A ViT's depth, or a ModifiedResNet's blocks per stage (a 4-tuple).
    layers: int | tuple[int, int, int, int] = 12
    patch_size: Optional[int] = 32  # None for a ModifiedResNet
    head_width: int = 64
    mlp_ratio: float = 4.0
    # The image tower's kind, one of TOWER_KINDS ("" reads it from `layers`: a tuple is a
    # ResNet); the family decides which module builds it.
    tower: str = ""

    def __post_init__(self):
        if not self.tower:
            object.__setattr__(self, "tower", "resnet" if isinstance(self.layers, (tuple, list)) else "vit")
        if self.tower not in TOWER_KINDS:
            raise ValueError(f"unknown vision.tower {self.tower!r}; valid: {', '.join(TOWER_KINDS)}")

    @property
    def is_resnet(self) -> bool:
        return self.tower == "resnet"

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



@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512
    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    act: str = "quick_gelu"  # "quick_gelu" (OpenAI), "gelu" (LAION), "gelu_tanh" (SigLIP)
    family: str = "clip"  # a registered family's name (clip_jax.models.families)


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
