"""The on-disk index: a folder anyone can read with NumPy and sqlite3, written so that a
crash at any moment leaves a valid index.

    INDEX/manifest.json       format version, indexed folder, feature dtype and size, the
                              model's identity (fingerprint, architecture, checkpoint path)
    INDEX/images.sqlite       images(id, path, size, mtime_ns, width, height, chunk, row)
                              skipped(path, size, mtime_ns, reason)   files that are not readable images
                              chunks(id, file, rows)
                              meta(key, value)   e.g. the size the ANN index was trained on
    INDEX/features/NNNNNN.npy [rows, D] L2-normalised image embeddings (float16 or float32);
                              image `id` is row `row` of chunk `chunk`.  Rows of deleted or
                              changed files stay in their chunk until compaction and belong
                              to no image.
    INDEX/report.json         what the last update did
    INDEX/ann.faiss           the approximate-search index, when one is used (clip_jax.search.ann)
    INDEX/thumbs/ID.jpg       thumbnails the server made

Reading it without clip_jax:

    rows = sqlite3.connect("INDEX/images.sqlite").execute("SELECT path, chunk, row FROM images").fetchall()
    vector = np.load(f"INDEX/features/{chunk:06d}.npy")[row]

Durability: a chunk file is written to a temporary name, fsynced and renamed into place;
only then does one SQLite transaction (synchronous=FULL) insert its rows.  A crash before
the commit leaves an unreferenced chunk file, deleted at the next update; a crash after it
leaves the chunk complete.  Image ids are never reused (AUTOINCREMENT), so a thumbnail
cached under an id always shows that id's file.  One writer at a time: updates hold an
exclusive lock on INDEX/lock.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import sqlite3
import threading
from typing import Callable, Iterable, Sequence

import numpy as np

FORMAT = "clip_jax.search"
VERSION = 1
DTYPES = ("float16", "float32")
MANIFEST = "manifest.json"
DATABASE = "images.sqlite"
FEATURES = "features"
REPORT = "report.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, width INTEGER, height INTEGER, chunk INTEGER NOT NULL, row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS images_by_chunk ON images (chunk);
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, file TEXT NOT NULL, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SearchIndexError(Exception):
    """Base of the search index's errors."""


class IndexBusyError(SearchIndexError):
    pass


class DamagedIndexError(SearchIndexError):
    pass


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace(path: str, write_file: Callable[[str], None]) -> None:
    """Make `path` by write_file(temporary path), so that it is either the old file or the
    whole new one, durably (fsync of the file, then of its folder, after the rename)."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        write_file(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path: str, write: Callable[[object], None], mode: str = "wb") -> None:
    """atomic_replace through write(open file)."""
    def write_file(tmp: str) -> None:
        with open(tmp, mode) as f:
            write(f)
    atomic_replace(path, write_file)


def write_json(path: str, data: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True) + "\n"), mode="w")


def chunk_name(chunk: int) -> str:
    return f"{chunk:06d}.npy"


class Store:
    """One index folder.  `Store.create` makes it, `Store(path)` opens it."""

    def __init__(self, path: str, writable: bool = False):
        self.path = os.path.abspath(path)
        manifest_path = os.path.join(self.path, MANIFEST)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{self.path} is not a search index (no {MANIFEST}); "
                                    "make one with `python -m clip_jax.search index DIR --index INDEX`")
        with open(manifest_path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            found = f"format {self.manifest.get('format')!r} version {self.manifest.get('version')!r}"
            raise DamagedIndexError(f"{manifest_path}: {found}; this clip_jax reads {FORMAT!r} version {VERSION}")
        self.writable = writable
        self._lock_file = None
        if writable:
            self._lock()
        database = os.path.join(self.path, DATABASE)
        if not writable and not os.path.exists(database):
            raise DamagedIndexError(f"{self.path}: {DATABASE} is missing")
        # Readers open read-write when they can: SQLite must be able to roll back the journal
        # of a writer that was killed mid-transaction.
        read_only = not writable and not os.access(self.path, os.W_OK)
        uri = f"file:{database}" + ("?mode=ro" if read_only else "")
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self.db.execute("PRAGMA synchronous=FULL")
        if writable:
            self.db.executescript(_SCHEMA)
            self._remove_orphans()

    @classmethod
    def create(cls, path: str, root: str, model: dict, dtype: str = "float16", ann: str = "auto") -> "Store":
        if dtype not in DTYPES:
            raise ValueError(f"feature dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        if os.path.exists(os.path.join(path, MANIFEST)):
            raise FileExistsError(f"{path} already holds an index")
        if os.path.isdir(path) and os.listdir(path):
            raise FileExistsError(f"{path} is a non-empty folder that is not an index; choose an empty or new folder")
        os.makedirs(os.path.join(path, FEATURES), exist_ok=True)
        write_json(os.path.join(path, MANIFEST), {
            "format": FORMAT, "version": VERSION, "root": os.path.realpath(root), "dtype": dtype,
            "embed_dim": model["architecture"]["embed_dim"], "model": model, "ann": ann, "created": now(),
            "features": "L2-normalised image embeddings, one .npy chunk per file; see images.sqlite",
            "fingerprint": "sha256 of the architecture JSON and every variable (sorted path, shape, float32 values)",
        })
        return cls(path, writable=True)

    # -- locking and cleanup ---------------------------------------------------------------

    def _lock(self) -> None:
        self._lock_file = open(os.path.join(self.path, "lock"), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise IndexBusyError(f"{self.path} is being updated by another process; wait for it to finish") from None

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _remove_orphans(self) -> None:
        """Delete chunk files no committed chunk names, and temporary files of killed writers."""
        known = {name for (name,) in self.db.execute("SELECT file FROM chunks")}
        folder = os.path.join(self.path, FEATURES)
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name not in known:
                os.unlink(os.path.join(folder, name))
        for name in os.listdir(self.path):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(self.path, name))

    # -- reading ------------------------------------------------------------------------------

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def root(self) -> str:
        return self.manifest["root"]

    def files(self) -> dict[str, tuple[int, int, int]]:
        """{path: (id, size, mtime_ns)} of every indexed image."""
        return {p: (i, s, m) for i, p, s, m in self.db.execute("SELECT id, path, size, mtime_ns FROM images")}

    def skipped(self) -> dict[str, tuple[int, int, str]]:
        """{path: (size, mtime_ns, reason)} of files that were not readable images."""
        return {p: (s, m, r) for p, s, m, r in self.db.execute("SELECT path, size, mtime_ns, reason FROM skipped")}

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def path_of(self, image_id: int) -> str | None:
        row = self.db.execute("SELECT path FROM images WHERE id = ?", (int(image_id),)).fetchone()
        return row[0] if row else None

    def id_of(self, path: str) -> int | None:
        row = self.db.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def _chunk(self, name: str, rows: int) -> np.ndarray:
        file = os.path.join(self.path, FEATURES, name)
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise DamagedIndexError(f"{file}: cannot read ({error}); rebuild the index") from None
        expected = (rows, self.manifest["embed_dim"])
        if array.shape != expected or array.dtype != np.dtype(self.dtype):
            raise DamagedIndexError(f"{file}: shape {array.shape} {array.dtype}, expected {expected} {self.dtype}")
        return array

    def load(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(ids [N] int64, paths [N], vectors [N, D] in the stored dtype), in id order."""
        records = self.db.execute("SELECT id, path, chunk, row FROM images ORDER BY id").fetchall()
        chunks = dict(self.db.execute("SELECT id, file || ':' || rows FROM chunks").fetchall())
        ids = np.array([r[0] for r in records], np.int64)
        paths = [r[1] for r in records]
        vectors = np.zeros((len(records), self.manifest["embed_dim"]), self.dtype)
        chunk_of = np.array([r[2] for r in records], np.int64)
        row_of = np.array([r[3] for r in records], np.int64)
        for chunk in np.unique(chunk_of):
            if int(chunk) not in chunks:
                raise DamagedIndexError(f"{self.path}: images refer to chunk {chunk}, which is not recorded")
            name, rows = chunks[int(chunk)].rsplit(":", 1)
            where = np.flatnonzero(chunk_of == chunk)
            vectors[where] = self._chunk(name, int(rows))[row_of[where]]
        return ids, paths, vectors

    # -- writing ------------------------------------------------------------------------------

    def _next_chunk(self) -> int:
        return (self.db.execute("SELECT MAX(id) FROM chunks").fetchone()[0] or 0) + 1

    def write_chunk_file(self, vectors: np.ndarray) -> tuple[int, str]:
        """Write the next chunk's vectors durably (atomically, fsynced), not yet committed:
        until its rows are, a crash leaves an orphan file that the next writer removes."""
        chunk = self._next_chunk()
        name = chunk_name(chunk)
        data = np.ascontiguousarray(vectors, dtype=self.dtype)
        atomic_write(os.path.join(self.path, FEATURES, name), lambda f: np.save(f, data))
        return chunk, name

    def add_chunk(self, entries: Sequence, sizes: Sequence[tuple[int, int]], vectors: np.ndarray) -> None:
        """Durably add one chunk: `entries` (FileEntry) with their upright (width, height) and
        normalised vectors.  Earlier records of the same paths are replaced in the same transaction."""
        if len(entries) != len(vectors) or len(entries) != len(sizes):
            raise ValueError(f"{len(entries)} entries, {len(sizes)} sizes and {len(vectors)} vectors")
        if not len(entries):
            return
        chunk, name = self.write_chunk_file(vectors)
        with self.db:
            paths = [(e.path,) for e in entries]
            self.db.executemany("DELETE FROM images WHERE path = ?", paths)
            self.db.executemany("DELETE FROM skipped WHERE path = ?", paths)
            self.db.execute("INSERT INTO chunks (id, file, rows) VALUES (?, ?, ?)", (chunk, name, len(entries)))
            self.db.executemany(
                "INSERT INTO images (path, size, mtime_ns, width, height, chunk, row) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.path, e.size, e.mtime_ns, w, h, chunk, row) for row, (e, (w, h)) in enumerate(zip(entries, sizes))])

    def record_skipped(self, skipped: Iterable[tuple[object, str]]) -> None:
        """[(FileEntry, reason)]: files that are not readable images (replacing any embedding of them)."""
        skipped = list(skipped)
        with self.db:
            self.db.executemany("DELETE FROM images WHERE path = ?", [(e.path,) for e, _ in skipped])
            self.db.executemany("INSERT OR REPLACE INTO skipped (path, size, mtime_ns, reason) VALUES (?, ?, ?, ?)",
                                [(e.path, e.size, e.mtime_ns, reason) for e, reason in skipped])

    def remove(self, paths: Iterable[str]) -> list[int]:
        """Forget `paths` (files that no longer exist); returns the ids removed."""
        paths = [(p,) for p in paths]
        with self.db:
            ids = [i for (p,) in paths for (i,) in self.db.execute("SELECT id FROM images WHERE path = ?", (p,))]
            self.db.executemany("DELETE FROM images WHERE path = ?", paths)
            self.db.executemany("DELETE FROM skipped WHERE path = ?", paths)
        return ids

    def dead_rows(self) -> int:
        total = self.db.execute("SELECT COALESCE(SUM(rows), 0) FROM chunks").fetchone()[0]
        return total - self.count()

    def compact(self, chunk_rows: int) -> int:
        """Rewrite the chunks that hold rows of removed images; returns how many rows were dropped.

        The new chunks are durable before one transaction moves the images to them; the old
        files are deleted after it (a crash in between leaves orphans, removed next time)."""
        sparse = [c for (c,) in self.db.execute(
            "SELECT chunks.id FROM chunks LEFT JOIN images ON images.chunk = chunks.id "
            "GROUP BY chunks.id HAVING COUNT(images.id) < chunks.rows ORDER BY chunks.id")]
        if not sparse:
            return 0
        dropped = self.dead_rows()
        marks = ",".join("?" * len(sparse))
        live = self.db.execute(f"SELECT images.id, chunks.file, chunks.rows, images.row FROM images JOIN chunks "
                               f"ON images.chunk = chunks.id WHERE chunks.id IN ({marks}) ORDER BY images.id",
                               sparse).fetchall()
        arrays = {}
        moves = []  # (new chunk, new row, image id)
        for start in range(0, len(live), chunk_rows):
            part = live[start : start + chunk_rows]
            vectors = np.stack([arrays.setdefault(f, self._chunk(f, n))[row] for _, f, n, row in part])
            chunk, name = self.write_chunk_file(vectors)
            with self.db:  # the chunk row alone: a crash before the moves leaves it unreferenced but harmless
                self.db.execute("INSERT INTO chunks (id, file, rows) VALUES (?, ?, ?)", (chunk, name, len(part)))
            moves += [(chunk, row, image_id) for row, (image_id, _, _, _) in enumerate(part)]
        files = [f for (f,) in self.db.execute(f"SELECT file FROM chunks WHERE id IN ({marks})", sparse)]
        with self.db:
            self.db.executemany("UPDATE images SET chunk = ?, row = ? WHERE id = ?", moves)
            self.db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", sparse)
        arrays.clear()
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, FEATURES, name))
        return dropped

    def get(self, key: str, default: str | None = None) -> str | None:
        """A value of the meta table (state that changes with updates, e.g. the ANN's training size)."""
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # an index written before the table existed
            return default
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def write_report(self, report: dict) -> None:
        write_json(os.path.join(self.path, REPORT), report)

    def report(self) -> dict | None:
        path = os.path.join(self.path, REPORT)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)
