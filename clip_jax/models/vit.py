"""CLIP's VisionTransformer: patch conv without bias, class token, learned positions,
the extra `ln_pre`, pre-LN blocks, `ln_post` on the class token, bias-free projection.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.layers import LayerNorm, Transformer, normal, torch_default_kernel


class VisionTransformer(nn.Module):
    image_size: int
    patch_size: int
    width: int
    layers: int
    num_heads: int
    mlp_dim: int
    output_dim: int
    act: str = "quick_gelu"
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, project: bool = True, train: bool = False) -> jax.Array:
        """images: [N, H, W, 3] -> [N, output_dim] (or [N, width] with project=False)."""
        del train  # no dropout or batch norm in the ViT
        scale = self.width**-0.5
        x = nn.Conv(
            self.width,
            (self.patch_size, self.patch_size),
            strides=(self.patch_size, self.patch_size),
            padding="VALID",
            use_bias=False,
            dtype=self.dtype,
            kernel_init=torch_default_kernel,
            name="conv1",
        )(images.astype(self.dtype))
        batch, grid_h, grid_w, _ = x.shape
        x = x.reshape(batch, grid_h * grid_w, self.width)  # row-major, as torch flattens
        cls = self.param("class_embedding", normal(scale), (self.width,))
        cls = jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, self.width))
        x = jnp.concatenate([cls, x], axis=1)
        positions = self.param("positional_embedding", normal(scale), (grid_h * grid_w + 1, self.width))
        x = x + positions.astype(self.dtype)
        x = LayerNorm(name="ln_pre")(x)
        x = Transformer(
            self.layers, self.num_heads, self.mlp_dim, self.act,
            causal=False, text_style_init=False, remat=self.remat, dtype=self.dtype,
            name="transformer",
        )(x)
        pooled = LayerNorm(name="ln_post")(x[:, 0])
        if not project:
            return pooled
        proj = self.param("proj", normal(scale), (self.width, self.output_dim))
        return pooled @ proj.astype(self.dtype)
