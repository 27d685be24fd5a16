"""Exact nearest-neighbour search: a JAX matmul and top-k over fixed-size blocks of rows.

Memory stays bounded by one block's scores whatever the collection's size, and every
block has the same shape (the last one padded, its padding scored -inf), so the search
compiles once per k bucket.  Rows stay in their stored dtype (float16 halves the bytes a
query reads: a single query is bound by memory bandwidth) and are scored in float32.
Queries are answered one at a time: on CPUs a [1, D] x [D, B] product per query is as
fast per query as a batched one over converted float16 rows (bench/search.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_ROWS = 65_536
ROW_MULTIPLE = 8


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(query, block, valid, k: int):
    scores = query @ block.astype(jnp.float32).T  # [1, B]
    scores = jnp.where(jnp.arange(block.shape[0])[None, :] < valid, scores, -jnp.inf)
    return jax.lax.top_k(scores, k)


def _bucket(k: int, limit: int) -> int:
    return min(limit, 1 << max(0, (k - 1).bit_length()))


class ExactSearch:
    """Exact inner-product top-k over `vectors` [N, D] (kept in their dtype, scored in float32)."""

    def __init__(self, vectors: np.ndarray, block_rows: int = BLOCK_ROWS):
        n, dim = vectors.shape
        self.size, self.dim = n, dim
        self.block_rows = max(ROW_MULTIPLE, min(block_rows, -(-n // ROW_MULTIPLE) * ROW_MULTIPLE))
        self.blocks = []
        for start in range(0, n, self.block_rows):
            part = vectors[start : start + self.block_rows]
            padded = np.zeros((self.block_rows, dim), vectors.dtype)
            padded[: len(part)] = part
            self.blocks.append((jax.device_put(padded), len(part), start))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k'], rows [Q, k']) best first, k' = min(k, N); equal scores in row order."""
        queries = np.asarray(queries, np.float32)
        k = min(int(k), self.size)
        if k <= 0 or not len(queries):
            return np.zeros((len(queries), max(k, 0)), np.float32), np.zeros((len(queries), max(k, 0)), np.int64)
        block_k = _bucket(k, self.block_rows)
        out_scores, out_rows = [], []
        for query in queries:
            scores, rows = [], []
            for block, valid, start in self.blocks:
                s, r = _block_top_k(query[None], block, valid, block_k)
                scores.append(np.asarray(s[0]))
                rows.append(np.asarray(r[0]).astype(np.int64) + start)
            scores, rows = np.concatenate(scores), np.concatenate(rows)
            order = np.lexsort((rows, -scores))[:k]
            out_scores.append(scores[order])
            out_rows.append(rows[order])
        return np.stack(out_scores), np.stack(out_rows)
