"""SigLIP's towers (SigLIP and SigLIP 2 FixRes share them), built from the CLIP blocks.

Image: patch conv with bias, learned positions, no class token and no ln_pre, pre-LN
blocks, `ln_post` on every token, then a multi-head attention-pooling (MAP) head: a
learned probe attends to all tokens, and LayerNorm + MLP on a residual.  The head's
output is the image embedding (there is no projection).

Text: token and position embeddings, bidirectional pre-LN blocks (no mask: padding is
part of the input, which is always padded to the context length), `ln_final`, the
feature at the last position, then a linear head with bias.

Parameter names follow the CLIP towers where the parts are the same (`conv1`,
`transformer/blocks/...`, `ln_post`, `ln_final`) so locking regexes and the converters'
tables read alike.  LayerNorm eps is 1e-6 and the MLPs use GELU's tanh approximation.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models.kernels import PLAIN, Kernels
from clip_jax.models.layers import MLP, LayerNorm, QKVProjection, Transformer, normal
from clip_jax.models.vit import PatchEmbedding, drop_patches


class MAPHead(nn.Module):
    """Multi-head attention pooling: one learned query over all tokens -> [batch, width]."""

    num_heads: int
    mlp_dim: int
    act: str = "gelu_tanh"
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, _, width = x.shape
        head_dim = width // self.num_heads
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, width))
        query = jnp.broadcast_to(probe.astype(self.dtype), (batch, 1, width))
        q, k, v = QKVProjection(self.dtype, kernels=self.kernels, name="in_proj")(x, query)
        heads = lambda t: t.reshape(batch, t.shape[1], self.num_heads, head_dim)  # noqa: E731
        pooled = self.kernels.attention(heads(q), heads(k), heads(v)).reshape(batch, 1, width)
        pooled = nn.Dense(width, dtype=self.dtype, dot_general=self.kernels.dot_general, name="out_proj")(pooled)
        mlp = MLP(self.mlp_dim, self.act, self.dtype, kernels=self.kernels, name="mlp")
        pooled = pooled + mlp(LayerNorm(self.layer_norm_eps, name="ln")(pooled))
        return pooled[:, 0]


class SiglipVisionTransformer(nn.Module):
    image_size: int
    patch_size: int
    width: int
    layers: int
    num_heads: int
    mlp_dim: int
    act: str = "gelu_tanh"
    layer_norm_eps: float = 1e-6
    remat: bool = False
    dtype: Any = jnp.float32
    patch_dropout: float = 0.0  # FLIP: fraction of patches dropped in training
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, images: jax.Array, project: bool = True, train: bool = False) -> jax.Array:
        """images: [N, H, W, 3] -> [N, width], the MAP head's output.

        There is no projection, so `project` changes nothing (as for CLIP's ResNets)."""
        del project
        x = PatchEmbedding(self.patch_size, self.width, self.dtype, self.kernels, use_bias=True, name="conv1")(images)
        batch, grid_h, grid_w, _ = x.shape
        x = x.reshape(batch, grid_h * grid_w, self.width)
        positions = self.param("positional_embedding", normal(self.width**-0.5), (grid_h * grid_w, self.width))
        x = x + positions.astype(self.dtype)
        if train and self.patch_dropout > 0:
            x = drop_patches(x, self.patch_dropout, self.make_rng("patch_dropout"), class_token=False)
        # Every token's output feeds the MAP head: no pooled-rows shortcut in the last block.
        x = Transformer(
            self.layers, self.num_heads, self.mlp_dim, self.act, causal=False, remat=self.remat, dtype=self.dtype,
            kernels=self.kernels, layer_norm_eps=self.layer_norm_eps, name="transformer",
        )(x)
        x = LayerNorm(self.layer_norm_eps, name="ln_post")(x)
        return MAPHead(self.num_heads, self.mlp_dim, self.act, self.layer_norm_eps, self.dtype, self.kernels,
                       name="head")(x)


class SiglipTextTransformer(nn.Module):
    context_length: int
    vocab_size: int
    width: int
    layers: int
    num_heads: int
    mlp_dim: int
    output_dim: int
    act: str = "gelu_tanh"
    layer_norm_eps: float = 1e-6
    remat: bool = False
    dtype: Any = jnp.float32
    full_last_block: bool = False  # True: the last block computes every token (same output)
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: int [N, T] -> [N, output_dim], from the feature at position T - 1."""
        batch, length = tokens.shape
        embedding = self.param("token_embedding", normal(self.width**-0.5), (self.vocab_size, self.width))
        positions = self.param("positional_embedding", normal(self.width**-0.5), (self.context_length, self.width))
        x = (jnp.take(embedding, tokens, axis=0) + positions[:length]).astype(self.dtype)
        x = Transformer(
            self.layers, self.num_heads, self.mlp_dim, self.act, causal=False, remat=self.remat, dtype=self.dtype,
            full_last_block=self.full_last_block, kernels=self.kernels, layer_norm_eps=self.layer_norm_eps,
            name="transformer",
        )(x, pool_rows=jnp.full((batch,), length - 1, jnp.int32))
        x = LayerNorm(self.layer_norm_eps, name="ln_final")(x)
        return nn.Dense(self.output_dim, dtype=self.dtype, dot_general=self.kernels.dot_general, name="head")(x)
