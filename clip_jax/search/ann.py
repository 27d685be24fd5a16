"""Approximate nearest-neighbour search with faiss: an inverted-file (IVF) index.

The vectors are split among `nlist` k-means cells; a query scores every vector in the
`nprobe` cells nearest to it, exactly (inner product).  Its misses are the only error:
bench/search.py measures recall@10 against exact search.  Vectors are stored as float16
(faiss's SQfp16 codec: the same values as an index's float16 features, half the memory of
float32) or float32 for float32 indexes.  The faiss ids are the index's image ids, so an
update removes and adds only what changed; the cells are retrained when the collection
has grown past RETRAIN_GROWTH times the size they were trained on.
"""
from __future__ import annotations

import math

import numpy as np

from clip_jax.search.store import atomic_replace

# Above this many images, `method="auto"` searches the ANN index (exact search below it
# takes a few milliseconds; bench/search.py has the figures).
AUTO_THRESHOLD = 100_000
RETRAIN_GROWTH = 4
TRAIN_POINTS_PER_CELL = 32
TRAIN_ITERATIONS = 12
MIN_CELLS = 8


def _faiss():
    import faiss  # imported here: exact search and the rest of the package work without loading it

    return faiss


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) cells, a power of two, at least MIN_CELLS."""
    return max(MIN_CELLS, 1 << round(math.log2(max(1.0, 4 * math.sqrt(n)))))


def default_nprobe(nlist: int) -> int:
    """Cells probed per query: 3/64 of them, at least 16.  Queries far from the images (text
    queries sit across CLIP's modality gap) need many probes; bench/search.py's table."""
    return min(nlist, max(16, nlist * 3 // 64))


class AnnIndex:
    """A faiss IVF index over (vectors, ids) with inner-product scores."""

    def __init__(self, index, trained_on: int, nprobe: int | None = None):
        self.index = index
        self.trained_on = trained_on
        self.nlist = _faiss().extract_index_ivf(index).nlist
        self.nprobe = nprobe or default_nprobe(self.nlist)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, nlist: int | None = None, seed: int = 0,
              nprobe: int | None = None) -> "AnnIndex":
        faiss = _faiss()
        n, dim = vectors.shape
        if n == 0:
            raise ValueError("cannot build an ANN index over 0 vectors")
        nlist = min(nlist or default_nlist(n), n)
        codec = "SQfp16" if vectors.dtype == np.float16 else "Flat"
        index = faiss.index_factory(dim, f"IVF{nlist},{codec}", faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if n > nlist * TRAIN_POINTS_PER_CELL:
            rows = np.random.default_rng(seed).choice(n, nlist * TRAIN_POINTS_PER_CELL, replace=False)
            sample = vectors[np.sort(rows)]
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.niter = TRAIN_ITERATIONS
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
        ivf.cp.min_points_per_centroid = 1  # small collections: no warning, the cells are just small
        index.train(np.ascontiguousarray(sample, np.float32))
        ann = cls(index, trained_on=n, nprobe=nprobe)
        ann.add(vectors, ids)
        return ann

    def add(self, vectors: np.ndarray, ids: np.ndarray, batch: int = 65_536) -> None:
        for start in range(0, len(ids), batch):
            self.index.add_with_ids(np.ascontiguousarray(vectors[start : start + batch], np.float32),
                                    np.ascontiguousarray(ids[start : start + batch], np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, np.int64))

    def ids(self) -> np.ndarray:
        """Every id in the index, sorted."""
        faiss = _faiss()
        invlists = faiss.extract_index_ivf(self.index).invlists
        parts = [faiss.rev_swig_ptr(invlists.get_ids(cell), invlists.list_size(cell)).copy()
                 for cell in range(invlists.nlist) if invlists.list_size(cell)]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def needs_retraining(self, n: int) -> bool:
        return n > RETRAIN_GROWTH * self.trained_on

    def sync(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[int, int]:
        """Make the index hold exactly `ids` (sorted or not) with `vectors`; (added, removed)."""
        have = self.ids()
        stale = np.setdiff1d(have, ids, assume_unique=True)
        missing = np.isin(ids, have, assume_unique=True, invert=True)
        self.remove(stale)
        self.add(vectors[missing], ids[missing])
        return int(missing.sum()), len(stale)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k'], ids [Q, k']) best first; k' = min(k, len(self)), rows padded with id -1
        when the probed cells hold fewer than k' vectors."""
        faiss = _faiss()
        k = min(int(k), len(self))
        params = faiss.SearchParametersIVF(nprobe=min(nprobe or self.nprobe, self.nlist))
        scores, ids = self.index.search(np.ascontiguousarray(queries, np.float32), k, params=params)
        return scores, ids

    def save(self, path: str) -> None:
        faiss = _faiss()
        atomic_replace(path, lambda tmp: faiss.write_index(self.index, tmp))

    @classmethod
    def load(cls, path: str, trained_on: int, nprobe: int | None = None) -> "AnnIndex":
        return cls(_faiss().read_index(path), trained_on=trained_on, nprobe=nprobe)
