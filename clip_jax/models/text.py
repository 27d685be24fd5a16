"""CLIP's causal text Transformer.

Token and position embeddings, pre-LN blocks under a causal mask, `ln_final`, then the
feature at each row's EOT token (the position of the largest id: EOT 49407 is the
largest, and argmax returns the first maximum) times `text_projection`.

There is deliberately no padding mask: id 0 is the real token "!", and the causal
mask already keeps padding after EOT from reaching the pooled feature.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clip_jax.models.kernels import PLAIN, Kernels
from clip_jax.models.layers import LayerNorm, Transformer, normal


class TextTransformer(nn.Module):
    context_length: int
    vocab_size: int
    width: int
    layers: int
    num_heads: int
    output_dim: int
    mlp_dim: int | None = None  # None: 4 * width, as in every released CLIP
    act: str = "quick_gelu"
    remat: bool = False
    dtype: Any = jnp.float32
    full_last_block: bool = False  # True: the last block computes every token (same output)
    kernels: Kernels = PLAIN

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: int [N, T] with T <= context_length -> [N, output_dim]."""
        length = tokens.shape[-1]
        embedding = self.param("token_embedding", normal(0.02), (self.vocab_size, self.width))
        positions = self.param("positional_embedding", normal(0.01), (self.context_length, self.width))
        x = (jnp.take(embedding, tokens, axis=0) + positions[:length]).astype(self.dtype)
        x = Transformer(
            self.layers, self.num_heads, self.mlp_dim or 4 * self.width, self.act,
            causal=True, text_style_init=True, remat=self.remat, dtype=self.dtype,
            full_last_block=self.full_last_block, kernels=self.kernels, name="transformer",
        )(x, pool_rows=jnp.argmax(tokens, axis=-1))
        eot = LayerNorm(name="ln_final")(x)
        proj = self.param("text_projection", normal(self.width**-0.5), (self.width, self.output_dim))
        return eot @ proj.astype(self.dtype)


def trim_after_eot(tokens: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Drop the columns after the last EOT of the batch, keeping a multiple of `multiple`.

    The causal mask means no position attends to a later one, so the feature at each
    row's EOT (its largest id) does not depend on anything after it: the trimmed batch
    gives the same features for a fraction of the work (prompts such as "a photo of a
    dog." are about 8 of 77 tokens).  Rounding the length up to a multiple bounds the
    number of shapes, and so of compilations, to ceil(77 / multiple)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not tokens.shape[0]:
        return tokens
    last = int(np.argmax(tokens, axis=-1).max()) + 1
    return tokens[:, : min(tokens.shape[1], -(-last // multiple) * multiple)]
