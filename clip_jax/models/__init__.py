"""Flax models of CLIP and SigLIP; `create_model` builds one from a registered name,
dimensions or an open_clip model config (`resolve_config`, models/resolve.py).  What differs
between families lives in models/families/; how a model scores pairs in models/scoring.py."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from clip_jax.models.architecture import CLIPConfig, TextConfig, VisionConfig
from clip_jax.models.families import FAMILIES, family_of
from clip_jax.models.kernels import ATTENTION_CHOICES, select_kernels
from clip_jax.models.model import CLIP, head_dims
from clip_jax.models.registry import MODELS, available_models, get_config, name_of
from clip_jax.models.resolve import check_config, resolve_config
from clip_jax.models.scoring import (
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    SCORING_RULES,
    SIGLIP_LOGIT_BIAS_INIT,
    SIGLIP_LOGIT_SCALE_INIT,
    scoring_rule,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(name_or_config, *, dtype="float32", remat: bool = False,
                 act: str | None = None, logit_scale_init: float | None = None,
                 logit_bias_init: float | None = None, scoring: str | None = None, patch_dropout: float = 0.0,
                 attention: str = "auto") -> CLIP:
    """A CLIP or SigLIP module for a registered name, a dict/ConfigDict of dimensions, an
    open_clip model config (dict or JSON path) or a `CLIPConfig` (see `resolve_config`).

    dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32, LayerNorm
    runs in float32); remat: recompute each block in the backward pass; act: override
    the MLP activation ("quick_gelu", "gelu" or "gelu_tanh"); scoring: "softmax" or
    "sigmoid" (clip_jax.models.scoring; default: "sigmoid" when a logit bias is given,
    else the family's: softmax for CLIP, sigmoid for SigLIP); logit_scale_init /
    logit_bias_init: the temperature's initial value (log space) and the sigmoid rule's
    learnable logit bias (default: the rule's, log(1/0.07) for softmax, log(10) and -10
    for sigmoid); patch_dropout: FLIP's
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
    if scoring is None:
        scoring = "sigmoid" if logit_bias_init is not None else family_of(config).scoring
    rule = scoring_rule(scoring)
    if logit_bias_init is not None and not rule.has_bias:
        raise ValueError(f"logit_bias_init={logit_bias_init} is given, but the {scoring!r} scoring rule has no "
                         "logit bias; use scoring='sigmoid' or leave the bias out")
    kernels = select_kernels(attention, dtype, head_dims(config))
    return CLIP(config=config, dtype=dtype, remat=remat, logit_scale_init=logit_scale_init,
                logit_bias_init=logit_bias_init, scoring=scoring, patch_dropout=patch_dropout, kernels=kernels)


__all__ = [
    "ATTENTION_CHOICES", "CLIP", "CLIPConfig", "FAMILIES", "TextConfig", "VisionConfig", "MODELS",
    "LOGIT_SCALE_INIT", "LOGIT_SCALE_MAX", "SCORING_RULES", "SIGLIP_LOGIT_BIAS_INIT", "SIGLIP_LOGIT_SCALE_INIT",
    "available_models", "check_config", "create_model", "family_of", "get_config", "name_of", "resolve_config",
    "scoring_rule",
]
