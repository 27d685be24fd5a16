"""Named architectures, like open_clip's model-config table.

Naming follows each project's meaning of a name:
  * OpenAI names ("ViT-B/32", "RN50", ...) are OpenAI's models: QuickGELU.
  * open_clip names follow open_clip's configs: "ViT-B-32" is GELU (the LAION models),
    "ViT-B-32-quickgelu" is QuickGELU.  The ResNet names ("RN50", ...) mean QuickGELU,
    since every published CLIP ResNet was trained with it.
  * ViT-H-14, ViT-g-14 and ViT-bigG-14 are GELU (LAION's); their "-quickgelu" names are
    DFN's and MetaCLIP's.
  * SigLIP and SigLIP 2 (FixRes) take Hugging Face's hub names ("siglip-base-patch16-224",
    "siglip2-so400m-patch14-384", ...): the same towers, SigLIP 2 with the Gemma tokenizer.
  * "tiny-vit", "tiny-resnet" and "tiny-siglip" are small enough for unit tests on a CPU.
"""
from __future__ import annotations

import dataclasses

from clip_jax.models.architecture import CLIPConfig, TextConfig, VisionConfig


def _vit(embed, size, width, layers, patch, text_width, text_layers=12, head_width=64,
         mlp_ratio=4.0, act="quick_gelu") -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed,
        vision=VisionConfig(image_size=size, width=width, layers=layers, patch_size=patch,
                            head_width=head_width, mlp_ratio=mlp_ratio),
        text=TextConfig(width=text_width, heads=text_width // 64, layers=text_layers),
        act=act,
    )


def _resnet(embed, size, width, layers, text_width) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed,
        vision=VisionConfig(image_size=size, width=width, layers=layers, patch_size=None),
        text=TextConfig(width=text_width, heads=text_width // 64, layers=12),
    )


# The CLIP paper's architecture tables (OpenAI's released models); ViT-H/g from open_clip's configs.
OPENAI_MODELS = {
    "RN50": _resnet(1024, 224, 64, (3, 4, 6, 3), 512),
    "RN101": _resnet(512, 224, 64, (3, 4, 23, 3), 512),
    "RN50x4": _resnet(640, 288, 80, (4, 6, 10, 6), 640),
    "RN50x16": _resnet(768, 384, 96, (6, 8, 18, 8), 768),
    "RN50x64": _resnet(1024, 448, 128, (3, 15, 36, 10), 1024),
    "ViT-B/32": _vit(512, 224, 768, 12, 32, 512),
    "ViT-B/16": _vit(512, 224, 768, 12, 16, 512),
    "ViT-L/14": _vit(768, 224, 1024, 24, 14, 768),
    "ViT-L/14@336px": _vit(768, 336, 1024, 24, 14, 768),
}

_OPEN_CLIP_VIT_NAMES = {
    "ViT-B-32": "ViT-B/32",
    "ViT-B-16": "ViT-B/16",
    "ViT-L-14": "ViT-L/14",
    "ViT-L-14-336": "ViT-L/14@336px",
}

MODELS: dict[str, CLIPConfig] = dict(OPENAI_MODELS)
for _oc_name, _openai_name in _OPEN_CLIP_VIT_NAMES.items():
    MODELS[_oc_name] = dataclasses.replace(OPENAI_MODELS[_openai_name], act="gelu")
    MODELS[_oc_name + "-quickgelu"] = OPENAI_MODELS[_openai_name]
for _rn in ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64"):
    MODELS[_rn + "-quickgelu"] = OPENAI_MODELS[_rn]
# open_clip's other plain-ViT CLIPs (LAION, DataComp, DFN, MetaCLIP checkpoints), from its model configs.
MODELS["ViT-B-32-256"] = dataclasses.replace(MODELS["ViT-B-32"], vision=dataclasses.replace(
    MODELS["ViT-B-32"].vision, image_size=256))
MODELS["ViT-B-16-plus-240"] = _vit(640, 240, 896, 12, 16, 640, act="gelu")
MODELS["ViT-H-14"] = _vit(1024, 224, 1280, 32, 14, 1024, text_layers=24, head_width=80, act="gelu")
MODELS["ViT-H-14-378"] = _vit(1024, 378, 1280, 32, 14, 1024, text_layers=24, head_width=80, act="gelu")
MODELS["ViT-g-14"] = _vit(1024, 224, 1408, 40, 14, 1024, text_layers=24, head_width=88,
                          mlp_ratio=4.3637, act="gelu")
MODELS["ViT-bigG-14"] = _vit(1280, 224, 1664, 48, 14, 1280, text_layers=32, head_width=104,
                             mlp_ratio=4.9231, act="gelu")
for _name in ("ViT-H-14", "ViT-H-14-378", "ViT-bigG-14"):  # DFN and MetaCLIP trained these with QuickGELU
    MODELS[_name + "-quickgelu"] = dataclasses.replace(MODELS[_name], act="quick_gelu")
MODELS["tiny-vit"] = CLIPConfig(
    embed_dim=32,
    vision=VisionConfig(image_size=32, width=64, layers=2, patch_size=8, head_width=32),
    text=TextConfig(width=64, heads=2, layers=2),
)
MODELS["tiny-resnet"] = CLIPConfig(
    embed_dim=32,
    vision=VisionConfig(image_size=64, width=16, layers=(1, 1, 1, 1), patch_size=None),
    text=TextConfig(width=64, heads=2, layers=2),
)


# SigLIP tower shapes (width, depth, heads, MLP width), the same for both towers.
_SIGLIP_SHAPES = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "so400m": (1152, 27, 16, 4304)}
# (variant, patch, image sizes) published for both SigLIP and SigLIP 2, and for SigLIP 2 alone.
_SIGLIP_PUBLISHED = [("base", 16, (224, 256, 384, 512)), ("large", 16, (256, 384)), ("so400m", 14, (224, 384))]
_SIGLIP2_ONLY = [("base", 32, (256,)), ("large", 16, (512,)), ("so400m", 16, (256, 384, 512))]
# family prefix -> (vocabulary, tokenizer): SigLIP's English SentencePiece, SigLIP 2's Gemma.
_SIGLIP_TEXT = {"siglip": (32_000, "siglip"), "siglip2": (256_000, "gemma")}


def _siglip(variant: str, patch: int, size: int, vocab: int, tokenizer: str, context_length: int = 64,
            ) -> CLIPConfig:
    width, layers, heads, mlp = _SIGLIP_SHAPES[variant]
    return CLIPConfig(
        embed_dim=width,
        vision=VisionConfig(image_size=size, width=width, layers=layers, patch_size=patch,
                            head_width=width // heads, mlp_ratio=mlp / width),
        text=TextConfig(context_length=context_length, vocab_size=vocab, width=width, heads=heads, layers=layers,
                        mlp_ratio=mlp / width, tokenizer=tokenizer),
        act="gelu_tanh",
        family="siglip",
    )


for _prefix, (_vocab, _tokenizer) in _SIGLIP_TEXT.items():
    for _variant, _patch, _sizes in _SIGLIP_PUBLISHED + (_SIGLIP2_ONLY if _prefix == "siglip2" else []):
        for _size in _sizes:
            # SigLIP so400m/14 at 224 px was trained on 16-token texts (big_vision's demo, HF's config).
            _context = 16 if (_prefix, _variant, _size) == ("siglip", "so400m", 224) else 64
            MODELS[f"{_prefix}-{_variant}-patch{_patch}-{_size}"] = _siglip(_variant, _patch, _size, _vocab,
                                                                            _tokenizer, _context)
MODELS["tiny-siglip"] = CLIPConfig(
    embed_dim=64,
    vision=VisionConfig(image_size=32, width=64, layers=2, patch_size=8, head_width=32),
    text=TextConfig(context_length=16, vocab_size=1000, width=64, heads=2, layers=2, tokenizer="siglip"),
    act="gelu_tanh",
    family="siglip",
)


def available_models() -> list[str]:
    return sorted(MODELS)


def get_config(name: str) -> CLIPConfig:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model name {name!r}; available: {', '.join(available_models())}") from None


def name_of(config: CLIPConfig) -> str | None:
    """The preferred registered name of an architecture (OpenAI's name first), if any."""
    for name, known in MODELS.items():
        if known == config:
            return name
    return None


def markdown_table() -> str:
    """Every registered architecture as a Markdown table (docs/models.md is this output)."""
    head = ("| name | family | image tower | image px | patch | width | layers | heads | MLP | embed | "
            "text ctx | vocab | text width | text layers | text heads | text MLP | act | tokenizer |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in available_models():
        c = MODELS[name]
        v, t = c.vision, c.text
        layers = "-".join(map(str, v.layers)) if v.is_resnet else v.layers
        rows.append(f"| {name} | {c.family} | {v.tower} | {v.image_size} | {v.patch_size or '-'} | {v.width} | "
                    f"{layers} | {v.num_heads} | {'-' if v.is_resnet else v.mlp_dim} | {c.embed_dim} | "
                    f"{t.context_length} | {t.vocab_size} | {t.width} | {t.layers} | {t.heads} | {t.mlp_dim} | "
                    f"{c.act} | {t.tokenizer} |")
    return "\n".join(rows) + "\n"
