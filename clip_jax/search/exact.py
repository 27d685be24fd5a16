"""Exact nearest-neighbour search: a JAX matmul and top-k over fixed-size blocks of rows.

Memory stays bounded by one block's scores whatever the collection's size, and every
block has the same shape (the last one padded, its padding scored -inf), so the search
compiles once per query-batch bucket and k bucket.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_ROWS = 65_536
QUERY_BUCKET = 8


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(queries, block, valid, k: int):
    scores = queries @ block.astype(jnp.float32).T
    scores = jnp.where(jnp.arange(block.shape[0])[None, :] < valid, scores, -jnp.inf)
    return jax.lax.top_k(scores, k)


def _bucket(k: int, limit: int) -> int:
    return min(limit, 1 << max(0, (k - 1).bit_length()))


class ExactSearch:
    """Exact inner-product top-k over `vectors` [N, D] (kept in their dtype, scored in float32)."""

    def __init__(self, vectors: np.ndarray, block_rows: int = BLOCK_ROWS):
        n, dim = vectors.shape
        self.size, self.dim = n, dim
        self.block_rows = max(QUERY_BUCKET, min(block_rows, -(-n // QUERY_BUCKET) * QUERY_BUCKET))
        self.blocks = []
        for start in range(0, n, self.block_rows):
            part = vectors[start : start + self.block_rows]
            padded = np.zeros((self.block_rows, dim), vectors.dtype)
            padded[: len(part)] = part
            self.blocks.append((jax.device_put(padded), len(part), start))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k'], rows [Q, k']) best first, k' = min(k, N)."""
        queries = np.asarray(queries, np.float32)
        q = len(queries)
        k = min(int(k), self.size)
        if k <= 0 or q == 0:
            return np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64)
        padded = np.zeros((-(-q // QUERY_BUCKET) * QUERY_BUCKET, self.dim), np.float32)
        padded[:q] = queries
        block_k = _bucket(k, self.block_rows)
        scores, rows = [], []
        for block, valid, start in self.blocks:
            s, r = _block_top_k(padded, block, valid, block_k)
            scores.append(np.asarray(s)[:q])
            rows.append(np.asarray(r)[:q].astype(np.int64) + start)
        scores, rows = np.concatenate(scores, axis=1), np.concatenate(rows, axis=1)
        # Stable order on ties (lower row first), so equal scores rank the same every time.
        order = np.lexsort((rows, -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
