"""The model: an image tower, a text tower and a learnable temperature (and, for the
sigmoid scoring rule, a learnable logit bias).  The family (`config.family`,
clip_jax/models/families/) builds the towers and sets the token contract.

`encode_image` / `encode_text` return projected, unnormalised features as OpenAI's do;
`__call__` returns both plus the logit scale (log space), leaving the loss to the trainer.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.architecture import CLIPConfig
from clip_jax.models.families import family_of
from clip_jax.models.kernels import Kernels, select_kernels
from clip_jax.models.scoring import ScoringRule, scoring_rule


class CLIP(nn.Module):
    config: CLIPConfig
    dtype: Any = jnp.float32  # compute dtype; parameters are always float32
    remat: bool = False
    # The temperature's initial value (log space); None: the scoring rule's.
    logit_scale_init: float | None = None
    # The learnable logit bias's initial value; None: the scoring rule's.  The model has
    # the bias when its scoring rule has one (sigmoid).
    logit_bias_init: float | None = None
    # How the model scores pairs (clip_jax.models.scoring): "softmax" or "sigmoid";
    # None: the family's.  Follows the training loss and is saved with checkpoints.
    scoring: str | None = None
    patch_dropout: float = 0.0  # ViT only: fraction of patches dropped in training (FLIP)
    # The towers' last blocks compute only the pooled token (class / EOT), which is all
    # that reaches the features; True runs them on every token: the same outputs for
    # more work (the plain form, for tests and for counting open_clip's FLOPs).
    full_last_block: bool = False
    # Backend-specific matmul and attention kernels; None: `select_kernels()` for this
    # backend (create_model chooses them once, from its `attention` argument).
    kernels: Kernels | None = None

    def setup(self):
        family = family_of(self.config)
        kernels = self.kernels or select_kernels(dtype=self.dtype, head_dims=head_dims(self.config))
        self.visual, self.text = family.build_towers(
            self.config, dtype=self.dtype, remat=self.remat, patch_dropout=self.patch_dropout,
            full_last_block=self.full_last_block, kernels=kernels)
        rule = self.scoring_rule
        scale = rule.logit_scale_init if self.logit_scale_init is None else self.logit_scale_init
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(scale), ())
        if rule.has_bias:
            bias = rule.logit_bias_init if self.logit_bias_init is None else self.logit_bias_init
            self.logit_bias = self.param("logit_bias", nn.initializers.constant(bias), ())

    @property
    def scoring_rule(self) -> ScoringRule:
        return scoring_rule(self.scoring or family_of(self.config).scoring)

    def encode_image(self, images: jax.Array, train: bool = False, project: bool = True) -> jax.Array:
        check_images(self.config, images)
        return self.visual(images, project=project, train=train)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        check_tokens(self.config, tokens)
        return self.text(tokens)

    def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False):
        """-> (image features, text features, logit_scale); features unnormalised.
        The logit bias, when the model has one, is read from the parameters."""
        return self.encode_image(images, train=train), self.encode_text(tokens), self.logit_scale


def head_dims(config: CLIPConfig) -> tuple[int, ...]:
    """The attention head dimensions of both towers (what fused attention kernels care about)."""
    vision = config.vision
    vision_width = vision.width * 32 if vision.is_resnet else vision.width
    return vision_width // vision.num_heads, config.text.width // config.text.heads


def check_images(config: CLIPConfig, images) -> None:
    """The image contract: float NHWC [batch, size, size, 3], normalised for the family."""
    size = config.vision.image_size
    shape = tuple(images.shape)
    expected = (f"NHWC float images [batch, {size}, {size}, 3], normalised as the {config.family} family "
                "expects (clip_jax.preprocess)")
    if len(shape) != 4:
        raise ValueError(f"images have rank {len(shape)} (shape {shape}); expected {expected}")
    if shape[1:] != (size, size, 3):
        hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))" if shape[1] == 3 else ""
        raise ValueError(f"images have shape {shape}; expected {expected}{hint}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images have dtype {images.dtype}; expected {expected} (run clip_jax.preprocess first)")


def check_tokens(config: CLIPConfig, tokens) -> None:
    """The token contract: integer ids [batch, length], length as the family requires."""
    shape = tuple(tokens.shape)
    problem = family_of(config).token_error(shape, config.text.context_length)
    if problem is None and not jnp.issubdtype(tokens.dtype, jnp.integer):
        problem = f"tokens have dtype {tokens.dtype}; expected integer ids"
    if problem:
        raise ValueError(f"{problem} (make them with clip_jax.load_tokenizer(model, ...))")


def example_inputs(config: CLIPConfig, batch: int = 1) -> tuple[jax.Array, jax.Array]:
    """Zero images and tokens of the shapes `config` takes: what `init` and shape
    evaluation trace the model with."""
    size = config.vision.image_size
    return (jnp.zeros((batch, size, size, 3), jnp.float32),
            jnp.zeros((batch, config.text.context_length), jnp.int32))
