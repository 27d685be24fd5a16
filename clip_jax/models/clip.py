"""The model: an image tower, a text tower and a learnable temperature (and, for SigLIP,
a learnable logit bias).  `config.family` picks the towers: CLIP's (vit.py / resnet.py,
text.py) or SigLIP's (siglip.py).

`encode_image` / `encode_text` return projected, unnormalised features as OpenAI's do;
`__call__` returns both plus the logit scale (log space), leaving the loss to the trainer.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.config import CLIPConfig
from clip_jax.models.kernels import Kernels, select_kernels
from clip_jax.models.resnet import ModifiedResNet
from clip_jax.models.siglip import SiglipTextTransformer, SiglipVisionTransformer
from clip_jax.models.text import TextTransformer
from clip_jax.models.vit import VisionTransformer

LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)  # the paper's cap: logits never scaled by more than 100
SIGLIP_LOGIT_SCALE_INIT, SIGLIP_LOGIT_BIAS_INIT = math.log(10.0), -10.0  # SigLIP's temperature and bias


class CLIP(nn.Module):
    config: CLIPConfig
    dtype: Any = jnp.float32  # compute dtype; parameters are always float32
    remat: bool = False
    logit_scale_init: float = LOGIT_SCALE_INIT  # log space; SigLIP uses log(10)
    # A learnable logit bias (SigLIP: -10); None: none, except that SigLIP models always
    # have one (initialised to -10).
    logit_bias_init: float | None = None
    patch_dropout: float = 0.0  # ViT only: fraction of patches dropped in training (FLIP)
    # The towers' last blocks compute only the pooled token (class / EOT), which is all
    # that reaches the features; True runs them on every token: the same outputs for
    # more work (the plain form, for tests and for counting open_clip's FLOPs).
    full_last_block: bool = False
    # Backend-specific matmul and attention kernels; None: `select_kernels()` for this
    # backend (create_model chooses them once, from its `attention` argument).
    kernels: Kernels | None = None

    def setup(self):
        cfg = self.config
        vision = cfg.vision
        kernels = self.kernels or select_kernels(dtype=self.dtype, head_dims=head_dims(cfg))
        if cfg.family == "siglip":
            self._setup_siglip(kernels)
            return
        if vision.is_resnet:
            self.visual = ModifiedResNet(
                image_size=vision.image_size,
                layers=vision.layers,
                width=vision.width,
                num_heads=vision.num_heads,
                output_dim=cfg.embed_dim,
                remat=self.remat,
                dtype=self.dtype,
                kernels=kernels,
            )
        else:
            self.visual = VisionTransformer(
                image_size=vision.image_size,
                patch_size=vision.patch_size,
                width=vision.width,
                layers=vision.layers,
                num_heads=vision.num_heads,
                mlp_dim=vision.mlp_dim,
                output_dim=cfg.embed_dim,
                act=cfg.act,
                remat=self.remat,
                dtype=self.dtype,
                patch_dropout=self.patch_dropout,
                full_last_block=self.full_last_block,
                kernels=kernels,
            )
        text = cfg.text
        self.text = TextTransformer(
            context_length=text.context_length,
            vocab_size=text.vocab_size,
            width=text.width,
            layers=text.layers,
            num_heads=text.heads,
            output_dim=cfg.embed_dim,
            act=cfg.act,
            remat=self.remat,
            dtype=self.dtype,
            full_last_block=self.full_last_block,
            kernels=kernels,
        )
        self._setup_temperature(with_bias=self.logit_bias_init is not None)

    def _setup_siglip(self, kernels: Kernels):
        cfg, vision, text = self.config, self.config.vision, self.config.text
        self.visual = SiglipVisionTransformer(
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            width=vision.width,
            layers=vision.layers,
            num_heads=vision.num_heads,
            mlp_dim=vision.mlp_dim,
            act=cfg.act,
            layer_norm_eps=cfg.layer_norm_eps,
            remat=self.remat,
            dtype=self.dtype,
            patch_dropout=self.patch_dropout,
            kernels=kernels,
        )
        self.text = SiglipTextTransformer(
            context_length=text.context_length,
            vocab_size=text.vocab_size,
            width=text.width,
            layers=text.layers,
            num_heads=text.heads,
            mlp_dim=text.mlp_dim,
            output_dim=cfg.embed_dim,
            act=cfg.act,
            layer_norm_eps=cfg.layer_norm_eps,
            remat=self.remat,
            dtype=self.dtype,
            full_last_block=self.full_last_block,
            kernels=kernels,
        )
        self._setup_temperature(with_bias=True)

    def _setup_temperature(self, with_bias: bool):
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())
        if with_bias:
            bias = SIGLIP_LOGIT_BIAS_INIT if self.logit_bias_init is None else self.logit_bias_init
            self.logit_bias = self.param("logit_bias", nn.initializers.constant(bias), ())

    def encode_image(self, images: jax.Array, train: bool = False, project: bool = True) -> jax.Array:
        size = self.config.vision.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"images must be NHWC [batch, {size}, {size}, 3] for this model; got shape {tuple(images.shape)}"
            )
        return self.visual(images, project=project, train=train)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        limit = self.config.text.context_length
        if self.config.family == "siglip":
            if tokens.ndim != 2 or tokens.shape[1] != limit:
                raise ValueError(f"tokens must be [batch, {limit}] integers, padded to the full context length as "
                                 f"SigLIP was trained; got shape {tuple(tokens.shape)}")
        elif tokens.ndim != 2 or tokens.shape[1] > limit:
            raise ValueError(f"tokens must be [batch, <= {limit}] integers; got shape {tuple(tokens.shape)}")
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
