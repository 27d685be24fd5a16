"""How SigLIP-family parameters are named in other projects' files: Hugging Face
`SiglipModel` state dicts and config.json, and the architecture of a bare state dict read
from its tensor shapes.

Everything goes through Hugging Face's parameter names, with one change: each block's
separate q/k/v projections are packed into one `self_attn.in_proj` (q | k | v rows), as
the Flax blocks hold them (`pack_qkv` / `unpack_qkv`); `state_dict_rows` maps those names
to Flax paths.

Hugging Face's `Siglip2Model` (model_type "siglip2") is SigLIP 2's NaFlex variant, whose
image tower takes a variable number of patches at the native aspect ratio; it is not
supported.  The FixRes SigLIP 2 checkpoints are `SiglipModel` folders and load here.
"""
from __future__ import annotations

import math
import os
import re
from typing import Iterator, Mapping

import numpy as np

from clip_jax.models.architecture import CLIPConfig, TextConfig, VisionConfig
from clip_jax.models.families.naming import (
    Row,
    contiguous,
    layer_norm_rows,
    linear_rows,
    pack_qkv_parts,
    text_config_from_hf,
    text_config_to_hf,
    vision_config_from_hf,
    vision_config_to_hf,
)
from clip_jax.models.registry import MODELS
from clip_jax.tokenizers import MODEL_FILES

LAYER_NORM_EPS = 1e-6
# transformers' SiglipTextConfig defaults, for keys a config.json leaves out
HF_TEXT_DEFAULTS = {"max_position_embeddings": 64, "vocab_size": 32_000, "hidden_size": 768,
                    "num_attention_heads": 12, "num_hidden_layers": 12, "intermediate_size": 3072}
SUPPORTED_MODEL_TYPES = ("siglip",)
HF_MODEL_TYPES = ("siglip", "siglip2")
SUPPORTED = ("SigLIP and SigLIP 2 FixRes checkpoints: Hugging Face SiglipModel folders (model_type 'siglip') "
             "and big_vision .npz files")
HF_ACTIVATION = "gelu_pytorch_tanh"
GEMMA_VOCAB = 256_000
_PACKED = "self_attn.in_proj."
_QKV = re.compile(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$")



# -- Hugging Face names, q/k/v packed ----------------------------------------------------


def _block_rows(hf_prefix: str, flax_path: tuple[str, ...], layers: int) -> Iterator[Row]:
    blocks = flax_path + ("transformer", "blocks")
    for i in range(layers):
        p = f"{hf_prefix}.encoder.layers.{i}."
        for hf_name, flax_name in (("self_attn.in_proj", ("attn", "in_proj")),
                                   ("self_attn.out_proj", ("attn", "out_proj")),
                                   ("mlp.fc1", ("mlp", "c_fc")), ("mlp.fc2", ("mlp", "c_proj"))):
            yield from linear_rows(p + hf_name, blocks + flax_name, layer=i)
        for hf_name, flax_name in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2")):
            yield from layer_norm_rows(p + hf_name, blocks + (flax_name,), layer=i)


def state_dict_rows(config: CLIPConfig) -> list[Row]:
    """Hugging Face key (q/k/v packed) -> Flax path, for every parameter."""
    v, t = ("visual",), ("text",)
    head = v + ("head",)
    table = [
        Row("vision_model.embeddings.patch_embedding.weight", "params", v + ("conv1", "kernel"), "conv"),
        Row("vision_model.embeddings.patch_embedding.bias", "params", v + ("conv1", "bias")),
        Row("vision_model.embeddings.position_embedding.weight", "params", v + ("positional_embedding",)),
        *_block_rows("vision_model", v, config.vision.layers),
        *layer_norm_rows("vision_model.post_layernorm", v + ("ln_post",)),
        Row("vision_model.head.probe", "params", head + ("probe",)),
        Row("vision_model.head.attention.in_proj_weight", "params", head + ("in_proj", "kernel"), "linear"),
        Row("vision_model.head.attention.in_proj_bias", "params", head + ("in_proj", "bias")),
        *linear_rows("vision_model.head.attention.out_proj", head + ("out_proj",)),
        *layer_norm_rows("vision_model.head.layernorm", head + ("ln",)),
        *linear_rows("vision_model.head.mlp.fc1", head + ("mlp", "c_fc")),
        *linear_rows("vision_model.head.mlp.fc2", head + ("mlp", "c_proj")),
        Row("text_model.embeddings.token_embedding.weight", "params", t + ("token_embedding",)),
        Row("text_model.embeddings.position_embedding.weight", "params", t + ("positional_embedding",)),
        *_block_rows("text_model", t, config.text.layers),
        *layer_norm_rows("text_model.final_layer_norm", t + ("ln_final",)),
        *linear_rows("text_model.head", t + ("head",)),
        Row("logit_scale", "params", ("logit_scale",), "scalar"),
        Row("logit_bias", "params", ("logit_bias",), "scalar"),
    ]
    return table


def is_siglip_state_dict(state_dict: Mapping) -> bool:
    return "vision_model.head.probe" in state_dict or any(
        k.startswith("vision_model.head.") or k == "text_model.head.weight" for k in state_dict)


def pack_qkv(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face's q/k/v projections of each block -> one `self_attn.in_proj` (q | k | v)."""
    out, parts = {}, {}
    for key, value in state_dict.items():
        match = _QKV.match(key)
        if match:
            parts.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
        else:
            out[key] = value
    for (prefix, kind), found in parts.items():
        out[f"{prefix}.{_PACKED}{kind}"] = pack_qkv_parts(found, f"{prefix} {kind}")
    return out


def unpack_qkv(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of `pack_qkv`: Hugging Face's own names."""
    out = {}
    for key, value in state_dict.items():
        prefix, packed, kind = key.partition(_PACKED)
        if not packed:
            out[key] = value
            continue
        for name, part in zip("qkv", np.split(value, 3, axis=0)):
            out[f"{prefix}self_attn.{name}_proj.{kind}"] = contiguous(part)
    return out



# -- Hugging Face config.json -------------------------------------------------------------


def check_model_type(hf: Mapping, source: str) -> None:
    model_type = hf.get("model_type")
    if model_type == "siglip2":
        patches = (hf.get("vision_config") or {}).get("num_patches")
        raise ValueError(
            f"{source}: model_type 'siglip2' is Hugging Face's Siglip2Model, SigLIP 2's NaFlex variant (variable "
            f"resolution and aspect ratio, vision_config.num_patches={patches}), "
            f"which clip_jax does not support. Supported: {SUPPORTED} (e.g. google/siglip2-base-patch16-224)")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not a SigLIP model. Supported: {SUPPORTED}")


def config_from_hf(hf: Mapping, source: str = "config.json", folder: str | None = None) -> CLIPConfig:
    """A `CLIPConfig` of a transformers SiglipConfig dict; the tokenizer kind ("siglip" or
    "gemma") is the one whose file `folder` holds, else the one the vocabulary size implies
    (SigLIP 2's Gemma has 256,000)."""
    check_model_type(hf, source)
    tokenizer = folder_tokenizer_kind(folder) if folder else None
    v, t = hf.get("vision_config") or {}, hf.get("text_config") or {}
    if not v.get("vision_use_head", True):
        raise ValueError(f"{source}: vision_use_head=false (an image tower without its attention-pooling head, as "
                         f"in PaliGemma) has no image embedding; supported: {SUPPORTED}")
    for name, tower in (("vision_config", v), ("text_config", t)):
        act = tower.get("hidden_act", HF_ACTIVATION)
        if act != HF_ACTIVATION:
            raise ValueError(f"{source}: {name}.hidden_act {act!r} unsupported; SigLIP uses {HF_ACTIVATION!r}")
        eps = tower.get("layer_norm_eps", LAYER_NORM_EPS)
        if abs(eps - LAYER_NORM_EPS) > 1e-12:
            raise ValueError(f"{source}: {name}.layer_norm_eps {eps} unsupported; SigLIP uses {LAYER_NORM_EPS}")
        if tower.get("num_channels", 3) != 3:
            raise ValueError(f"{source}: {name}.num_channels {tower['num_channels']} unsupported; clip_jax takes RGB")
    width = v.get("hidden_size", 768)
    text_width = t.get("hidden_size", 768)
    projection = t.get("projection_size") or text_width
    if projection != width:
        raise ValueError(f"{source}: text_config.projection_size {projection} differs from the image width {width}; "
                         "SigLIP compares the text head's output with the image embedding, so they must be equal")
    vocab = t.get("vocab_size", HF_TEXT_DEFAULTS["vocab_size"])
    vision = vision_config_from_hf(v, default_patch_size=16)
    text = text_config_from_hf(t, HF_TEXT_DEFAULTS, tokenizer=tokenizer or ("gemma" if vocab == GEMMA_VOCAB
                                                                           else "siglip"))
    return CLIPConfig(embed_dim=width, vision=vision, text=text, act="gelu_tanh", family="siglip")


def folder_tokenizer_kind(folder: str) -> str | None:
    """The tokenizer kind a Hugging Face folder ships (by its SentencePiece file), if any."""
    for kind in ("siglip", "gemma"):
        if os.path.exists(os.path.join(folder, MODEL_FILES[kind])):
            return kind
    return None


def config_to_hf(config: CLIPConfig) -> dict:
    """The transformers SiglipConfig dict (config.json) of a SigLIP architecture."""
    v, t = config.vision, config.text
    tokens = {"siglip": {"pad_token_id": 1, "eos_token_id": 1}, "gemma": {"pad_token_id": 0, "eos_token_id": 1,
                                                                          "bos_token_id": 2}}[t.tokenizer]
    return {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "torch_dtype": "float32",
        "text_config": {
            **text_config_to_hf(t),
            "hidden_act": HF_ACTIVATION,
            "layer_norm_eps": LAYER_NORM_EPS,
            "projection_size": config.embed_dim,
            **tokens,
        },
        "vision_config": {
            **vision_config_to_hf(v),
            "hidden_act": HF_ACTIVATION,
            "layer_norm_eps": LAYER_NORM_EPS,
        },
    }



# -- architecture from shapes -------------------------------------------------------------


def _signature(config: CLIPConfig) -> tuple:
    """What tensor shapes show of a SigLIP architecture: the patch grid (not the image
    size: 384 px at patch 14 is a 27 x 27 grid, as 378 px is), widths, depths, vocabulary."""
    v, t = config.vision, config.text
    return (v.image_size // v.patch_size, v.patch_size, v.width, v.layers, v.mlp_dim,
            t.context_length, t.vocab_size, t.width, t.layers, t.mlp_dim, config.embed_dim)


def infer_config(state_dict: Mapping[str, np.ndarray]) -> CLIPConfig:
    """The architecture of a SigLIP state dict (Hugging Face names, q/k/v packed) from its
    shapes.  Heads and the exact image size come from the registered model with the same
    shapes; other shapes get 64-wide heads and grid x patch pixels.  The tokenizer kind
    follows the vocabulary (SigLIP 2's Gemma has 256,000 tokens)."""
    try:
        patch_weight = state_dict["vision_model.embeddings.patch_embedding.weight"]
        positions = state_dict["vision_model.embeddings.position_embedding.weight"]
        tokens = state_dict["text_model.embeddings.token_embedding.weight"]
        text_positions = state_dict["text_model.embeddings.position_embedding.weight"]
        head = state_dict["text_model.head.weight"]
        vision_fc = state_dict["vision_model.encoder.layers.0.mlp.fc1.weight"]
        text_fc = state_dict["text_model.encoder.layers.0.mlp.fc1.weight"]
    except KeyError as error:
        raise ValueError(f"cannot infer the SigLIP architecture: key {error.args[0]!r} is missing") from None
    width, patch = patch_weight.shape[0], patch_weight.shape[-1]
    grid = math.isqrt(positions.shape[0])
    if grid * grid != positions.shape[0]:
        raise ValueError(f"vision position embedding has {positions.shape[0]} rows, not a square grid")
    text_width = tokens.shape[1]

    def depth(tower):
        return len({k.split(".")[3] for k in state_dict if k.startswith(f"{tower}.encoder.layers.")})

    vocab = tokens.shape[0]
    inferred = CLIPConfig(
        embed_dim=head.shape[0],
        vision=VisionConfig(image_size=grid * patch, width=width, layers=depth("vision_model"), patch_size=patch,
                            head_width=64, mlp_ratio=vision_fc.shape[0] / width),
        text=TextConfig(context_length=text_positions.shape[0], vocab_size=vocab, width=text_width,
                        heads=max(1, text_width // 64), layers=depth("text_model"),
                        mlp_ratio=text_fc.shape[0] / text_width,
                        tokenizer="gemma" if vocab == GEMMA_VOCAB else "siglip"),
        act="gelu_tanh",
        family="siglip",
    )
    signature = (_signature(inferred), inferred.text.tokenizer)
    for known in MODELS.values():
        if known.family == inferred.family and (_signature(known), known.text.tokenizer) == signature:
            return known
    return inferred


