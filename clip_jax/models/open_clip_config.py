"""open_clip's model-config format <-> `CLIPConfig`.

open_clip describes an architecture as {"embed_dim", "quick_gelu", "vision_cfg": {...},
"text_cfg": {...}} (the files in its src/open_clip/model_configs/, and the "model_cfg" of
a Hugging Face hub folder's open_clip_config.json).  clip_jax builds the towers of
OpenAI's CLIP: a ViT with a class token (or a ModifiedResNet) and a causal text
transformer pooled at the EOT token.  Every open_clip field either maps onto a
`CLIPConfig` field, leaves the weights and the inference unchanged (training-time
settings such as patch_dropout), or must keep the value that means OpenAI's tower;
anything else (a timm or Hugging Face tower, another pooling, a SigLIP logit bias, ...)
is an error naming the field.
"""
from __future__ import annotations

from typing import Any, Mapping

from clip_jax.models.architecture import CLIPConfig, TextConfig, VisionConfig

# Fields that must keep these values (open_clip's defaults, OpenAI's towers).
_VISION_FIXED = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
    "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None,
    "block_type": (None, "default"), "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "timm_model_name": None,
}
# Fields with no effect on the weights or on inference here.
_VISION_INERT = {"patch_dropout", "output_tokens", "attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained",
                 "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"}
_TEXT_FIXED = {
    "ls_init_value": None, "embed_cls": False, "no_causal_mask": False,
    "final_ln_after_pool": False, "pool_type": "argmax", "proj_bias": False, "proj_type": "linear",
    "act_kwargs": None, "norm_kwargs": None, "block_type": (None, "default"), "qk_norm": False,
    "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
    "scale_fc": False, "hf_model_name": None, "hf_tokenizer_name": None, "tokenizer_mode": None,
    "tokenizer_kwargs": None,
}
_TEXT_INERT = {"pad_id", "eos_id", "output_tokens", "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"}
_TOP_FIXED = {"custom_text": False, "init_logit_bias": None, "multimodal_cfg": None, "nonscalar_logit_scale": False}
_TOP_INERT = {"init_logit_scale", "cast_dtype"}
_VISION_MAPPED = ("image_size", "width", "layers", "patch_size", "head_width", "mlp_ratio")
_TEXT_MAPPED = ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio")


def is_open_clip_config(data: Mapping) -> bool:
    return "vision_cfg" in data or "text_cfg" in data


def _check_fields(section: Mapping, prefix: str, mapped, fixed: Mapping, inert, source: str) -> None:
    for key, value in section.items():
        if key in mapped or key in inert:
            continue
        if key not in fixed:
            valid = sorted(set(mapped) | set(fixed) | set(inert))
            raise ValueError(f"{source}: unknown open_clip config field '{prefix}{key}'; valid: {', '.join(valid)}")
        allowed = fixed[key] if isinstance(fixed[key], tuple) else (fixed[key],)
        if value not in allowed:
            raise ValueError(
                f"{source}: open_clip config field {prefix}{key}={value!r} is not supported by clip_jax, which builds "
                f"OpenAI's CLIP towers (supported: {' or '.join(repr(a) for a in allowed)})")


def from_open_clip(data: Mapping[str, Any], source: str = "open_clip config") -> CLIPConfig:
    """The `CLIPConfig` of an open_clip model config; ValueError naming any field that
    clip_jax cannot build.  `source` names the file in messages."""
    data = dict(data)
    for required in ("embed_dim", "vision_cfg", "text_cfg"):
        if required not in data:
            raise ValueError(f"{source}: open_clip model config without {required!r}")
    top_mapped = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")
    _check_fields(data, "", top_mapped, _TOP_FIXED, _TOP_INERT, source)
    vision, text = dict(data["vision_cfg"]), dict(data["text_cfg"])
    _check_fields(vision, "vision_cfg.", _VISION_MAPPED, _VISION_FIXED, _VISION_INERT, source)
    _check_fields(text, "text_cfg.", _TEXT_MAPPED, _TEXT_FIXED, _TEXT_INERT, source)

    defaults = VisionConfig()
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{source}: vision_cfg.image_size={list(size)} is not square; "
                             "clip_jax takes square images")
        size = size[0]
    layers = vision.get("layers", 12)
    if isinstance(layers, (list, tuple)):
        layers = tuple(layers)
    width = vision.get("width", 768)
    ratio = _clip_jax_ratio(width, float(vision.get("mlp_ratio", 4.0)))
    return CLIPConfig(
        embed_dim=data["embed_dim"],
        vision=VisionConfig(
            image_size=size, width=width, layers=layers,
            # open_clip's default patch size is 16; a ResNet has none
            patch_size=None if isinstance(layers, tuple) else vision.get("patch_size", 16),
            head_width=vision.get("head_width", defaults.head_width), mlp_ratio=ratio,
        ),
        text=TextConfig(**{k: text[k] for k in _TEXT_MAPPED if k in text and k != "mlp_ratio"},
                        mlp_ratio=_clip_jax_ratio(text.get("width", 512), float(text.get("mlp_ratio", 4.0)))),
        act="quick_gelu" if data.get("quick_gelu", False) else "gelu",
    )


def _clip_jax_ratio(width: int, ratio: float) -> float:
    """An mlp_ratio whose rounding by clip_jax gives open_clip's (truncated) MLP width."""
    return ratio if round(width * ratio) == int(width * ratio) else int(width * ratio) / width


def _open_clip_ratio(width: int, mlp_dim: int, ratio: float) -> float:
    """An mlp_ratio whose truncation by open_clip gives mlp_dim."""
    return ratio if int(width * ratio) == mlp_dim else (mlp_dim + 0.5) / width


def to_open_clip(config: CLIPConfig) -> dict:
    """open_clip's model config of an architecture (what open_clip_config.json's
    "model_cfg" holds)."""
    vision = config.vision
    vision_cfg = {"image_size": vision.image_size, "layers": list(vision.layers) if vision.is_resnet else vision.layers,
                  "width": vision.width, "patch_size": vision.patch_size, "head_width": vision.head_width}
    if not vision.is_resnet:
        vision_cfg["mlp_ratio"] = _open_clip_ratio(vision.width, vision.mlp_dim, vision.mlp_ratio)
    text = config.text
    return {
        "embed_dim": config.embed_dim,
        "quick_gelu": config.act == "quick_gelu",
        "vision_cfg": vision_cfg,
        "text_cfg": {"context_length": text.context_length, "vocab_size": text.vocab_size, "width": text.width,
                     "heads": text.heads, "layers": text.layers,
                     **({} if text.mlp_ratio == 4.0 else
                        {"mlp_ratio": _open_clip_ratio(text.width, text.mlp_dim, text.mlp_ratio)})},
    }
