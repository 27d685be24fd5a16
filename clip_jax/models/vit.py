"""CLIP's VisionTransformer: patch conv without bias, class token, learned positions,
the extra `ln_pre`, pre-LN blocks, `ln_post` on the class token, bias-free projection;
optionally FLIP's patch dropout in training.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.kernels import PLAIN, Kernels
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
    patch_dropout: float = 0.0  # FLIP: fraction of patches dropped in training
    full_last_block: bool = False  # True: the last block computes every token (same output)
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, images: jax.Array, project: bool = True, train: bool = False) -> jax.Array:
        """images: [N, H, W, 3] -> [N, output_dim] (or [N, width] with project=False).

        With train=True and patch_dropout > 0, each image keeps a random subset of its
        patches (the class token always stays); needs the 'patch_dropout' rng."""
        scale = self.width**-0.5
        x = PatchEmbedding(self.patch_size, self.width, self.dtype, self.kernels, name="conv1")(images)
        batch, grid_h, grid_w, _ = x.shape
        x = x.reshape(batch, grid_h * grid_w, self.width)  # row-major, as torch flattens
        cls = self.param("class_embedding", normal(scale), (self.width,))
        cls = jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, self.width))
        x = jnp.concatenate([cls, x], axis=1)
        positions = self.param("positional_embedding", normal(scale), (grid_h * grid_w + 1, self.width))
        x = x + positions.astype(self.dtype)
        if train and self.patch_dropout > 0:
            x = drop_patches(x, self.patch_dropout, self.make_rng("patch_dropout"))
        x = LayerNorm(name="ln_pre")(x)
        x = Transformer(
            self.layers, self.num_heads, self.mlp_dim, self.act,
            causal=False, text_style_init=False, remat=self.remat, dtype=self.dtype,
            full_last_block=self.full_last_block, kernels=self.kernels, name="transformer",
        )(x, pool_rows=jnp.zeros((batch,), jnp.int32))  # the class token
        pooled = LayerNorm(name="ln_post")(x)
        if not project:
            return pooled
        proj = self.param("proj", normal(scale), (self.width, self.output_dim))
        return pooled @ proj.astype(self.dtype)


class PatchEmbedding(nn.Module):
    """OpenAI's `conv1` (kernel = stride = patch, no bias; SigLIP's has a bias) computed
    as one matmul over flattened patches: the same arithmetic, but a plain GEMM that
    every backend runs at full speed (XLA's CPU convolution ran it at a third of its
    matmul rate).  The parameter keeps the convolution's [p, p, 3, width] layout and
    initialisation."""

    patch_size: int
    width: int
    dtype: Any = jnp.float32
    kernels: Kernels = PLAIN
    use_bias: bool = False

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p = self.patch_size
        kernel = self.param("kernel", torch_default_kernel, (p, p, images.shape[-1], self.width))
        batch, height, width, channels = images.shape
        grid_h, grid_w = height // p, width // p
        # As the convolution's VALID padding, a remainder of rows or columns is ignored
        # (SigLIP so400m/14 at 384 px sees 27 x 14 = 378 of them).
        patches = images[:, : grid_h * p, : grid_w * p].astype(self.dtype)
        patches = patches.reshape(batch, grid_h, p, grid_w, p, channels)
        # -> [batch, grid_h, grid_w, p, p, channels]: each patch flattened in the
        # kernel's (row, column, channel) order.
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, grid_h, grid_w, p * p * channels)
        kernel = kernel.astype(self.dtype).reshape(p * p * channels, self.width)
        out = self.kernels.dense(patches, kernel)
        if self.use_bias:
            out = out + self.param("bias", nn.initializers.zeros, (self.width,)).astype(self.dtype)
        return out


def drop_patches(tokens: jax.Array, rate: float, rng: jax.Array, class_token: bool = True) -> jax.Array:
    """Keep the class token (when there is one, first) and a random round((1 - rate) *
    patches) patches per image (at least one), in their original order; positions were
    already added."""
    batch, length, width = tokens.shape
    prefix = int(class_token)
    patches = length - prefix
    keep = max(1, int(round(patches * (1.0 - rate))))
    scores = jax.random.uniform(rng, (batch, patches))
    kept = jnp.sort(jnp.argsort(scores, axis=1)[:, :keep], axis=1) + prefix
    if class_token:
        kept = jnp.concatenate([jnp.zeros((batch, 1), kept.dtype), kept], axis=1)
    return jnp.take_along_axis(tokens, kept[:, :, None], axis=1)
