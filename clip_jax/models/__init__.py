"""Flax models of CLIP and SigLIP; `create_model` builds one from a registered name,
dimensions or an open_clip model config (`resolve_config`, models/spec.py)."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from clip_jax.models.clip import (
    CLIP,
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    SIGLIP_LOGIT_BIAS_INIT,
    SIGLIP_LOGIT_SCALE_INIT,
    head_dims,
)
from clip_jax.models.config import CLIPConfig, TextConfig, VisionConfig
from clip_jax.models.kernels import ATTENTION_CHOICES, select_kernels
from clip_jax.models.registry import MODELS, available_models, get_config, name_of
from clip_jax.models.spec import check_config, resolve_config

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(name_or_config, *, dtype="float32", remat: bool = False,
                 act: str | None = None, logit_scale_init: float | None = None,
                 logit_bias_init: float | None = None, patch_dropout: float = 0.0,
                 attention: str = "auto") -> CLIP:
    """A CLIP or SigLIP module for a registered name, a dict/ConfigDict of dimensions, an
    open_clip model config (dict or JSON path) or a `CLIPConfig` (see `resolve_config`).

    dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32, LayerNorm
    runs in float32); remat: recompute each block in the backward pass; act: override
    the MLP activation ("quick_gelu", "gelu" or "gelu_tanh"); logit_scale_init /
    logit_bias_init: the temperature's initial value (log space) and an optional
    learnable logit bias (default: CLIP's log(1/0.07) and no bias; for SigLIP models
    SigLIP's log(10) and -10, and they always have the bias); patch_dropout: FLIP's
    fraction of image patches dropped in training (ViTs only); attention: "auto" (cuDNN flash
    attention on NVIDIA GPUs when the dtype and head sizes allow it, XLA elsewhere),
    "xla" or "cudnn" (an error where it cannot run).
    """
    if not 0.0 <= patch_dropout < 1.0:
        raise ValueError(f"patch_dropout must be in [0, 1); got {patch_dropout}")
    config = resolve_config(name_or_config)
    if act is not None:
        config = dataclasses.replace(config, act=act)
        check_config(config)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if logit_scale_init is None:
        logit_scale_init = SIGLIP_LOGIT_SCALE_INIT if config.family == "siglip" else LOGIT_SCALE_INIT
    kernels = select_kernels(attention, dtype, head_dims(config))
    return CLIP(config=config, dtype=dtype, remat=remat, logit_scale_init=logit_scale_init,
                logit_bias_init=logit_bias_init, patch_dropout=patch_dropout, kernels=kernels)


__all__ = [
    "ATTENTION_CHOICES", "CLIP", "CLIPConfig", "TextConfig", "VisionConfig", "MODELS", "LOGIT_SCALE_INIT",
    "LOGIT_SCALE_MAX", "SIGLIP_LOGIT_BIAS_INIT", "SIGLIP_LOGIT_SCALE_INIT", "available_models", "check_config",
    "create_model", "get_config", "name_of", "resolve_config",
]
