"""Similarity scores in which equal candidates score exactly equal.

A matrix product need not give bitwise-equal results for two equal rows or columns: the
kernel may handle a row by its position (a remainder tile, a vector lane).  Real data
hold exact duplicates (one caption on many images, re-uploaded images, a class name
listed twice), and they must tie exactly, so that the evaluation's tie rule (lower index
first, see retrieval.py and metrics.py) decides them rather than rounding.  Candidates are
therefore deduplicated, scored once, and their scores copied to every duplicate.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def unique_rows(features) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows [U, D] float32, index [N] of each row's distinct row)."""
    features = np.asarray(features, np.float32)
    unique, inverse = np.unique(features, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1).astype(np.int32)


def normalise(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def scores_with_exact_ties(queries, candidates, candidate_of):
    """queries [Q, D] @ candidates [U, D].T, spread to [Q, N] by candidate_of [N]: equal
    candidates get the very same score.  Usable inside jit."""
    return jnp.take(queries @ candidates.T, candidate_of, axis=1)
