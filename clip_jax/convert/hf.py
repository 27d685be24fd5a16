"""Hugging Face `CLIPModel` folders (config.json + safetensors or pytorch_model.bin);
`read_config` / `write_config` also serve SigLIP folders (clip_jax.convert.siglip).

HF splits OpenAI's packed QKV into q/k/v projections, stores the two projections as
Linear layers (transposed), and renames the rest; ResNet towers do not exist in HF.
The conversion goes through OpenAI's names so the Flax mapping lives in one place.
"""
from __future__ import annotations

import json
import os
import re
from typing import Mapping

import numpy as np

from clip_jax.convert import siglip
from clip_jax.convert.hf_vision import vision_config_from_hf, vision_config_to_hf
from clip_jax.convert.safetensors_io import contiguous
from clip_jax.models.config import CLIPConfig, TextConfig

_BLOCK_RENAMES = [
    ("attn.out_proj.", "self_attn.out_proj."),
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]
_PLAIN_RENAMES = [  # OpenAI key -> HF key, tensors unchanged
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),  # sic: HF's spelling
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ("logit_scale", "logit_scale"),
]
_TRANSPOSED_RENAMES = [("visual.proj", "visual_projection.weight"), ("text_projection", "text_projection.weight")]
_OPENAI_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")


def is_hf_state_dict(state_dict: Mapping) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in state_dict)


def openai_to_hf(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if any(k.startswith("visual.layer1.") for k in sd):
        raise ValueError("Hugging Face's CLIPModel has no ModifiedResNet tower; export ResNet models as open_clip")
    out = {}
    for openai_key, hf_key in _PLAIN_RENAMES:
        out[hf_key] = sd[openai_key]
    for openai_key, hf_key in _TRANSPOSED_RENAMES:
        out[hf_key] = contiguous(sd[openai_key].T)
    for key, value in sd.items():
        match = _OPENAI_BLOCK.match(key)
        if not match:
            continue
        tower = "vision_model" if match.group(1) else "text_model"
        prefix, rest = f"{tower}.encoder.layers.{match.group(2)}.", match.group(3)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
                out[f"{prefix}self_attn.{name}.{kind}"] = contiguous(part)
            continue
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                out[prefix + new + rest[len(old):]] = value
                break
        else:
            raise ValueError(f"no Hugging Face name for {key!r}")
    return out


def hf_to_openai(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    out, used = {}, set()
    for openai_key, hf_key in _PLAIN_RENAMES:
        if hf_key in sd:
            out[openai_key] = sd[hf_key]
            used.add(hf_key)
    for openai_key, hf_key in _TRANSPOSED_RENAMES:
        if hf_key in sd:
            out[openai_key] = contiguous(sd[hf_key].T)
            used.add(hf_key)
    qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        match = _HF_BLOCK.match(key)
        if not match:
            continue
        used.add(key)
        prefix = ("visual." if match.group(1) == "vision" else "") + f"transformer.resblocks.{match.group(2)}."
        rest = match.group(3)
        q = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if q:
            qkv.setdefault((prefix, q.group(2)), {})[q.group(1)] = value
            continue
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(new):
                out[prefix + old + rest[len(new):]] = value
                break
        else:
            out[key] = value  # reported as unexpected by the Flax mapping
    for (prefix, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{prefix}: q/k/v projection {kind}s incomplete, found only {sorted(parts)}")
        out[f"{prefix}attn.in_proj_{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    for key in set(sd) - used:
        out[key] = sd[key]  # reported as unexpected by the Flax mapping
    return out


def config_from_hf(hf: Mapping) -> CLIPConfig:
    """A `CLIPConfig` of a transformers CLIPConfig dict (config.json)."""
    if hf.get("model_type") not in (None, "clip"):
        raise ValueError(f"config.json describes model_type {hf.get('model_type')!r}, not 'clip'")
    try:
        v, t = hf["vision_config"], hf["text_config"]
    except KeyError as error:
        raise ValueError(f"config.json lacks {error.args[0]!r}; not a CLIPModel config") from None
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise ValueError(
            f"hidden_act {sorted(acts)} unsupported; clip_jax supports one of quick_gelu or gelu for both towers"
        )
    for tower in (v, t):
        eps = tower.get("layer_norm_eps", 1e-5)
        if abs(eps - 1e-5) > 1e-12:
            raise ValueError(f"layer_norm_eps {eps} unsupported; CLIP uses 1e-5")
    vision = vision_config_from_hf(v, default_patch_size=32)
    text = TextConfig(
        context_length=t.get("max_position_embeddings", 77),
        vocab_size=t.get("vocab_size", 49408),
        width=t.get("hidden_size", 512),
        heads=t.get("num_attention_heads", 8),
        layers=t.get("num_hidden_layers", 12),
    )
    return CLIPConfig(embed_dim=hf.get("projection_dim", 512), vision=vision, text=text, act=acts.pop())


def config_to_hf(config: CLIPConfig, logit_scale_init: float) -> dict:
    if config.vision.is_resnet:
        raise ValueError("Hugging Face's CLIPModel has no ModifiedResNet tower; export ResNet models as open_clip")
    v, t = config.vision, config.text
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": logit_scale_init,
        "torch_dtype": "float32",
        "text_config": {
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": 4 * t.width,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": config.act,
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        "vision_config": {
            **vision_config_to_hf(v),
            "hidden_act": config.act,
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
        },
    }


def read_config(folder: str) -> CLIPConfig:
    """The architecture of a Hugging Face CLIPModel or SiglipModel folder."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    if config.get("model_type") in siglip.HF_MODEL_TYPES:
        return siglip.config_from_hf(config, path, tokenizer=siglip.folder_tokenizer_kind(folder))
    return config_from_hf(config)


def write_config(folder: str, config: CLIPConfig, logit_scale_init: float) -> None:
    hf = siglip.config_to_hf(config) if config.family == "siglip" else config_to_hf(config, logit_scale_init)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
