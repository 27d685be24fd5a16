"""Scoring rules: how a model turns image-text cosine similarities into probabilities,
and the temperature range its training keeps.

  * "softmax" (CLIP's contrastive loss): a softmax of scale * cos over the candidates;
    the scale is capped at 100 (the CLIP paper's cap, applied in training and scoring).
  * "sigmoid" (SigLIP's loss): sigmoid(scale * cos + bias) for each pair on its own; no
    cap (released SigLIP models have scales above 100).

The rule follows the loss a model was trained with (`losses.LossSpec.scoring`), is
recorded in checkpoint metadata, and otherwise defaults to the model family's.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # the CLIP paper's initial temperature 0.07
LOGIT_SCALE_MAX = math.log(100.0)  # the paper's cap: logits never scaled by more than 100
SIGLIP_LOGIT_SCALE_INIT, SIGLIP_LOGIT_BIAS_INIT = math.log(10.0), -10.0  # the SigLIP paper's start


@dataclasses.dataclass(frozen=True)
class ScoringRule:
    name: str
    logit_scale_init: float  # where a fresh model's temperature starts (log space)
    logit_scale_max: float | None  # the cap on the temperature (log space), None: none
    logit_bias_init: float | None  # where its learnable logit bias starts; None: no bias

    @property
    def has_bias(self) -> bool:
        return self.logit_bias_init is not None

    def clamp(self, logit_scale: jax.Array) -> jax.Array:
        """The trained temperature (log space) kept in [0, cap] after each update."""
        if self.logit_scale_max is None:
            return logit_scale
        return jnp.clip(logit_scale, 0.0, self.logit_scale_max)

    def probabilities(self, cosine, params) -> jax.Array:
        """[N, C] probabilities of [N, C] cosine similarities under the model's `params`
        (its logit_scale, and logit_bias for the sigmoid rule)."""
        logit_scale = jnp.asarray(params["logit_scale"], jnp.float32)
        if self.logit_scale_max is not None:
            logit_scale = jnp.minimum(logit_scale, self.logit_scale_max)
        scale = jnp.exp(logit_scale)
        logits = scale * jnp.asarray(cosine, jnp.float32)
        if self.has_bias:
            return jax.nn.sigmoid(logits + jnp.asarray(params["logit_bias"], jnp.float32))
        return jax.nn.softmax(logits, axis=-1)


SCORING_RULES = {
    "softmax": ScoringRule("softmax", LOGIT_SCALE_INIT, logit_scale_max=LOGIT_SCALE_MAX, logit_bias_init=None),
    "sigmoid": ScoringRule("sigmoid", SIGLIP_LOGIT_SCALE_INIT, logit_scale_max=None,
                           logit_bias_init=SIGLIP_LOGIT_BIAS_INIT),
}


def scoring_rule(name: str) -> ScoringRule:
    try:
        return SCORING_RULES[name]
    except KeyError:
        raise ValueError(f"unknown scoring rule {name!r}; valid: {', '.join(SCORING_RULES)}") from None
