"""Embedding image files in durable chunks: decode in worker threads, encode in fixed batches.

Files are read by a thread pool a bounded window ahead of the encoder (PIL releases the
GIL while decoding and resizing), so memory holds at most `window` decoded images
whatever the collection's size.  Each chunk of `chunk_size` files comes out as one
`Chunk`, which the caller stores durably before the next one is embedded.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from clip_jax.search.files import FileEntry, UnreadableImage, iter_chunks, read_for_model


@dataclasses.dataclass
class Chunk:
    entries: list[FileEntry]           # embedded files, in row order
    sizes: list[tuple[int, int]]       # their upright (width, height)
    vectors: np.ndarray                # [len(entries), D] normalised float32
    failed: list[tuple[FileEntry, str]]  # files that were not readable images, with the reason


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """fn(item) for each item, in order, computed by `pool` at most `window` items ahead."""
    pending = collections.deque()
    items = iter(items)
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        for item in items:
            pending.append(pool.submit(fn, item))
            break
        yield result


def embed_chunks(encoder, root: str, entries: list[FileEntry], chunk_size: int = 1024, workers: int | None = None,
                 progress: bool = True) -> Iterator[Chunk]:
    """Chunks of embeddings of `entries` (paths relative to `root`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    workers = workers or min(8, os.cpu_count() or 1)
    size = encoder.image_size

    def read(entry: FileEntry):
        try:
            return entry, *read_for_model(os.path.join(root, entry.path), size, encoder.family), None
        except UnreadableImage as error:
            return entry, None, None, str(error)

    bar = tqdm(total=len(entries), unit="img", desc="embedding", disable=not progress, smoothing=0.1)
    with ThreadPoolExecutor(workers, thread_name_prefix="clip_jax-read") as pool, bar:
        results = _prefetch(pool, read, entries, window=2 * encoder.batch_size + workers)
        for part in iter_chunks(entries, chunk_size):
            chunk = Chunk([], [], np.zeros((0, encoder.embed_dim), np.float32), [])
            batch, vectors = [], []
            for _ in part:
                entry, pixels, image_size, reason = next(results)
                if reason is not None:
                    chunk.failed.append((entry, reason))
                else:
                    chunk.entries.append(entry)
                    chunk.sizes.append(image_size)
                    batch.append(pixels)
                if len(batch) == encoder.batch_size:
                    vectors.append(encoder.encode_images(np.stack(batch)))
                    bar.update(len(batch))
                    batch = []
            if batch:
                vectors.append(encoder.encode_images(np.stack(batch)))
                bar.update(len(batch))
            bar.update(len(chunk.failed))
            if vectors:
                chunk.vectors = np.concatenate(vectors)
            yield chunk
