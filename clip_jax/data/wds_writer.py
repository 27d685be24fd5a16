"""Writing WebDataset tar shards: `ShardWriter` rolls to a new shard every N samples.

A sample is a key plus {extension: bytes}; members are written as `key.ext` in one tar,
consecutively, as img2dataset does, so any WebDataset reader (ours, webdataset's) reads
them.  Shards are named PREFIX-00000.tar, PREFIX-00001.tar, ...; `spec()` gives the
matching `wds:` spec with a brace range.
"""
from __future__ import annotations

import io
import os
import tarfile
import time

import tensorflow as tf

_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str | None:
    """The file extension matching encoded image bytes (from their magic number), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)


class ShardWriter:
    def __init__(self, prefix: str, samples_per_shard: int = 10_000):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
        directory = os.path.dirname(prefix)
        if directory:
            tf.io.gfile.makedirs(directory)
        self.prefix, self.samples_per_shard = prefix, samples_per_shard
        self.shard_paths: list[str] = []
        self.count = 0
        self._file = self._tar = None

    def write(self, key: str, fields: dict[str, bytes | str]) -> None:
        if "/" in key or "." in key:
            raise ValueError(f"sample key must not contain '/' or '.', got {key!r}")
        if self._tar is None or self.count % self.samples_per_shard == 0:
            self._open_next()
        mtime = time.time()
        for ext, data in fields.items():
            if isinstance(data, str):
                data = data.encode("utf-8")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), mtime, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def _open_next(self) -> None:
        self._close_current()
        path = f"{self.prefix}-{len(self.shard_paths):05d}.tar"
        self._file = tf.io.gfile.GFile(path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w")
        self.shard_paths.append(path)

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            self._tar = self._file = None

    def close(self) -> None:
        self._close_current()

    def spec(self) -> str:
        if not self.shard_paths:
            raise ValueError("no shard written yet")
        return f"wds:{self.prefix}-{{00000..{len(self.shard_paths) - 1:05d}}}.tar"

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
