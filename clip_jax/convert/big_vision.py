"""big_vision's SigLIP parameter files (.npz), read as Hugging Face SiglipModel state dicts.

The names change as transformers' conversion script changes them (`npz_to_hf`): flax
kernels transposed, attention kernels [width, heads, head_dim] flattened, the MAP head's
q/k/v packed, `t`/`b` the temperature and bias; blocks stored stacked
(`encoderblock/...`, scanned models) are split per layer.  An .npz holds no config, so
its architecture is read from tensor shapes (the SigLIP family's `infer_config`).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from clip_jax.models.families.naming import contiguous


def is_big_vision_npz(arrays: Mapping) -> bool:
    return any(k.split("/", 1)[-1].startswith(("img/", "txt/")) or k in ("params/t", "t") for k in arrays)


_NPZ_BLOCK = {
    "LayerNorm_0/scale": "layer_norm1.weight", "LayerNorm_0/bias": "layer_norm1.bias",
    "LayerNorm_1/scale": "layer_norm2.weight", "LayerNorm_1/bias": "layer_norm2.bias",
    "MlpBlock_0/Dense_0/kernel": "mlp.fc1.weight", "MlpBlock_0/Dense_0/bias": "mlp.fc1.bias",
    "MlpBlock_0/Dense_1/kernel": "mlp.fc2.weight", "MlpBlock_0/Dense_1/bias": "mlp.fc2.bias",
    **{f"MultiHeadDotProductAttention_0/{bv}/{kind}": f"self_attn.{hf}_proj.{'weight' if kind == 'kernel' else 'bias'}"
       for bv, hf in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "out")) for kind in ("kernel", "bias")},
}
_NPZ_PLAIN = {
    "img/embedding/bias": "vision_model.embeddings.patch_embedding.bias",
    "img/Transformer/encoder_norm/scale": "vision_model.post_layernorm.weight",
    "img/Transformer/encoder_norm/bias": "vision_model.post_layernorm.bias",
    "img/MAPHead_0/probe": "vision_model.head.probe",
    "img/MAPHead_0/LayerNorm_0/scale": "vision_model.head.layernorm.weight",
    "img/MAPHead_0/LayerNorm_0/bias": "vision_model.head.layernorm.bias",
    "img/MAPHead_0/MlpBlock_0/Dense_0/bias": "vision_model.head.mlp.fc1.bias",
    "img/MAPHead_0/MlpBlock_0/Dense_1/bias": "vision_model.head.mlp.fc2.bias",
    "img/MAPHead_0/MultiHeadDotProductAttention_0/out/bias": "vision_model.head.attention.out_proj.bias",
    "txt/Embed_0/embedding": "text_model.embeddings.token_embedding.weight",
    "txt/Encoder_0/encoder_norm/scale": "text_model.final_layer_norm.weight",
    "txt/Encoder_0/encoder_norm/bias": "text_model.final_layer_norm.bias",
    "txt/head/bias": "text_model.head.bias",
}
_NPZ_TRANSPOSED = {  # flax [in, out] kernels -> torch [out, in]
    "img/MAPHead_0/MlpBlock_0/Dense_0/kernel": "vision_model.head.mlp.fc1.weight",
    "img/MAPHead_0/MlpBlock_0/Dense_1/kernel": "vision_model.head.mlp.fc2.weight",
    "txt/head/kernel": "text_model.head.weight",
}
_NPZ_TOWERS = {"img/Transformer/": "vision_model", "txt/Encoder_0/": "text_model"}


def _split_stacked(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scanned big_vision models store `encoderblock/...` with a leading layer axis."""
    out = {}
    for key, value in arrays.items():
        if "/encoderblock/" in key:
            for i, layer in enumerate(value):
                out[key.replace("/encoderblock/", f"/encoderblock_{i}/")] = layer
        else:
            out[key] = value
    return out


def _attention_to_hf(name: str, value: np.ndarray) -> np.ndarray:
    """big_vision's attention tensors -> torch Linear layout."""
    if name.endswith("bias"):
        return value.reshape(-1)
    if "/out/" in name:  # [heads, head_dim, width] -> [width, heads * head_dim]
        return value.reshape(-1, value.shape[-1]).T
    return value.reshape(value.shape[0], -1).T  # [width, heads, head_dim] -> [heads * head_dim, width]


def npz_to_hf(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision SigLIP parameters -> a Hugging Face SiglipModel state dict (q/k/v separate).
    Keys it does not know are kept as they are (then reported as unexpected)."""
    arrays = _split_stacked({k[len("params/"):] if k.startswith("params/") else k: np.asarray(v)
                             for k, v in arrays.items()})
    out: dict[str, np.ndarray] = {}
    head_qkv: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key in _NPZ_PLAIN:
            out[_NPZ_PLAIN[key]] = value
        elif key in _NPZ_TRANSPOSED:
            out[_NPZ_TRANSPOSED[key]] = value.T
        elif key == "img/embedding/kernel":
            out["vision_model.embeddings.patch_embedding.weight"] = value.transpose(3, 2, 0, 1)
        elif key == "img/pos_embedding":
            out["vision_model.embeddings.position_embedding.weight"] = value.reshape(-1, value.shape[-1])
        elif key == "txt/pos_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value.reshape(-1, value.shape[-1])
        elif key in ("t", "b"):
            out["logit_scale" if key == "t" else "logit_bias"] = value.reshape(1)
        elif key.startswith("img/MAPHead_0/MultiHeadDotProductAttention_0/"):
            name = key.rsplit("/", 2)[-2:]
            if name[0] == "out":
                out["vision_model.head.attention.out_proj.weight"] = _attention_to_hf(key, value)
            else:
                head_qkv.setdefault(name[1], {})[name[0]] = _attention_to_hf(key, value)
        else:
            for prefix, tower in _NPZ_TOWERS.items():
                match = re.match(re.escape(prefix) + r"encoderblock_(\d+)/(.+)$", key)
                if match and match.group(2) in _NPZ_BLOCK:
                    hf_name = f"{tower}.encoder.layers.{match.group(1)}.{_NPZ_BLOCK[match.group(2)]}"
                    if "MultiHeadDotProductAttention" in key:
                        value = _attention_to_hf(key, value)
                    elif key.endswith("kernel"):
                        value = value.T
                    out[hf_name] = value
                    break
            else:
                out[key] = value
    for kind, parts in head_qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"img/MAPHead_0 attention {kind}s incomplete, found only {sorted(parts)}")
        out[f"vision_model.head.attention.in_proj_{'weight' if kind == 'kernel' else 'bias'}"] = np.concatenate(
            [parts["query"], parts["key"], parts["value"]], axis=0)
    return {k: contiguous(v) for k, v in out.items()}

