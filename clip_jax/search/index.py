"""`Index`: a searchable, incrementally updated index of a folder of images.

    from clip_jax.search import Index
    index = Index.build("~/Pictures", "~/pictures.index", checkpoint="ViT-B-32.pt")  # create or update
    for hit in index.search("a red bicycle", k=5):
        print(f"{hit.score:.3f} {hit.file}")
    index.search(image="query.jpg", plus="at night")           # example image + text
    index = Index.open("~/pictures.index")                      # later: the model comes from the manifest

The index lives on disk (clip_jax.search.store): every update commits its work in
durable chunks, so there is nothing to save; `Index.open` loads it.  Searches are exact
(clip_jax.search.exact) up to ann.AUTO_THRESHOLD images and approximate (faiss IVF,
clip_jax.search.ann) above it, unless `method` says otherwise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Sequence

import numpy as np
from PIL import Image

from clip_jax.pretrained import DownloadError
from clip_jax.search import ann as ann_lib
from clip_jax.search import files as files_lib
from clip_jax.search.embedding import embed_chunks
from clip_jax.search.encoder import Encoder, describe, normalise
from clip_jax.search.exact import ExactSearch
from clip_jax.search.store import SearchIndexError, Store, now

ANN_MODES = ("auto", "on", "off")
METHODS = ("auto", "exact", "ann")
ANN_FILE = "ann.faiss"
THUMBS = "thumbs"
COMPACT_FRACTION = 0.25  # rewrite chunks once this fraction of stored rows belongs to no image


class ModelMismatchError(SearchIndexError):
    pass


@dataclasses.dataclass(frozen=True)
class Hit:
    id: int        # the image's id in the index (stable until the file changes)
    path: str      # relative to the indexed folder
    file: str      # absolute path
    score: float   # cosine similarity to the query

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Index:
    """An index folder, optionally with the model that made it (needed to embed queries)."""

    def __init__(self, store: Store, encoder: Encoder | None = None):
        self.store = store
        self._encoder = None
        self._snapshot = None  # (ids, paths, vectors) as loaded
        self._exact = None
        self._ann = None
        self._data_version = None
        if encoder is not None:
            self.attach(encoder)

    # -- opening ------------------------------------------------------------------------------

    @staticmethod
    def _encoder(checkpoint, model, variables, name, batch_size, tokenizer=None) -> Encoder | None:
        if model is not None or variables is not None:
            if model is None or variables is None:
                raise ValueError("pass both model and variables, or a checkpoint")
            return Encoder(model, variables, checkpoint=checkpoint, batch_size=batch_size, tokenizer=tokenizer)
        if checkpoint:
            return Encoder.from_checkpoint(checkpoint, name=name, batch_size=batch_size, tokenizer=tokenizer)
        return None

    @classmethod
    def open(cls, path: str, checkpoint: str | None = None, *, model=None, variables=None, name: str | None = None,
             writable: bool = False, batch_size: int = 64, tokenizer=None) -> "Index":
        """The index at `path`.  A model (checkpoint, or model + variables) is checked against the
        one the index was made with; without one, the recorded checkpoint is loaded when a query
        needs it."""
        store = Store(os.path.expanduser(path), writable=writable)
        try:
            return cls(store, cls._encoder(checkpoint, model, variables, name, batch_size, tokenizer))
        except BaseException:
            store.close()
            raise

    @classmethod
    def create(cls, root: str, path: str, checkpoint: str | None = None, *, model=None, variables=None,
               name: str | None = None, dtype: str = "float16", ann: str = "auto", batch_size: int = 64,
               tokenizer=None) -> "Index":
        """A new, empty index of the folder `root` at `path` (call `update` to fill it)."""
        if ann not in ANN_MODES:
            raise ValueError(f"ann={ann!r}; valid: {', '.join(ANN_MODES)}")
        root = os.path.expanduser(root)
        if not os.path.isdir(root):
            raise NotADirectoryError(f"{root!r} is not a folder of images")
        encoder = cls._encoder(checkpoint, model, variables, name, batch_size, tokenizer)
        if encoder is None:
            raise ValueError("a new index needs a model: pass checkpoint=, or model= and variables=")
        store = Store.create(os.path.expanduser(path), root, encoder.identity(), dtype=dtype, ann=ann)
        return cls(store, encoder)

    @classmethod
    def build(cls, root: str, path: str, checkpoint: str | None = None, *, model=None, variables=None,
              name: str | None = None, dtype: str | None = None, ann: str | None = None, batch_size: int = 64,
              chunk_size: int = 1024, workers: int | None = None, progress: bool = True, tokenizer=None) -> "Index":
        """Create the index of `root` at `path`, or bring an existing one up to date.  tokenizer:
        for SigLIP models whose SentencePiece file is not beside the checkpoint (see
        clip_jax.tokenizers.resolve); CLIP models use their own BPE."""
        path = os.path.expanduser(path)
        if os.path.exists(os.path.join(path, "manifest.json")):
            index = cls.open(path, checkpoint, model=model, variables=variables, name=name, writable=True,
                             batch_size=batch_size, tokenizer=tokenizer)
            try:
                index._check_settings(root, dtype, ann)
            except BaseException:
                index.close()
                raise
        else:
            index = cls.create(root, path, checkpoint, model=model, variables=variables, name=name,
                               dtype=dtype or "float16", ann=ann or "auto", batch_size=batch_size, tokenizer=tokenizer)
        try:
            index.update(chunk_size=chunk_size, workers=workers, progress=progress)
        except BaseException:
            index.close()
            raise
        return index

    def _check_settings(self, root: str, dtype: str | None, ann: str | None) -> None:
        manifest = self.store.manifest
        if os.path.realpath(os.path.expanduser(root)) != manifest["root"]:
            raise SearchIndexError(f"{self.store.path} indexes {manifest['root']}, not {os.path.realpath(root)}; "
                                   "use another index folder for another image folder")
        if dtype and dtype != manifest["dtype"]:
            raise SearchIndexError(f"{self.store.path} stores {manifest['dtype']} features, not {dtype}; "
                                   "the dtype is fixed when an index is created")
        if ann and ann != manifest["ann"]:
            raise SearchIndexError(f"{self.store.path} was created with ann={manifest['ann']!r}, not {ann!r}")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the model ------------------------------------------------------------------------------

    def attach(self, encoder: Encoder) -> None:
        """Use `encoder` for queries and updates, after checking it is the index's model."""
        recorded = self.store.manifest["model"]
        if encoder.fingerprint != recorded["fingerprint"]:
            raise ModelMismatchError(
                f"index {self.store.path} holds embeddings of {describe(recorded)}, but the model given is "
                f"{encoder.describe()}; embeddings of two models cannot be mixed: use the index's checkpoint, "
                "or make a new index (another --index folder) for this model")
        self._encoder = encoder

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            checkpoint = self.store.manifest["model"].get("checkpoint")
            if not checkpoint:
                raise SearchIndexError(f"index {self.store.path} needs its model to embed queries and recorded no "
                                       "checkpoint; pass --checkpoint (checkpoint=)")
            try:  # a local path, or a hub / pretrained spec that loads from the cache or the network
                encoder = Encoder.from_checkpoint(checkpoint, name=self.store.manifest["model"].get("name"))
            except (FileNotFoundError, DownloadError) as error:
                raise SearchIndexError(f"index {self.store.path} needs its model to embed queries, and its recorded "
                                       f"checkpoint {checkpoint!r} cannot be loaded ({error}); pass --checkpoint "
                                       "(checkpoint=)") from None
            self.attach(encoder)
        return self._encoder

    # -- contents --------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self.store.path

    @property
    def root(self) -> str:
        return self.store.root

    @property
    def manifest(self) -> dict:
        return self.store.manifest

    def refresh(self) -> bool:
        """Reload the vectors if the index changed on disk since they were loaded; whether it had."""
        version = self.store.db.execute("PRAGMA data_version").fetchone()[0]
        count = self.store.db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM images").fetchone()
        key = (version, count)
        if self._snapshot is not None and key == self._data_version:
            return False
        self._data_version = key
        self._snapshot = self.store.load()
        self._exact = None
        self._ann = None
        return True

    def _loaded(self):
        if self._snapshot is None:
            self.refresh()
        return self._snapshot

    @property
    def ids(self) -> np.ndarray:
        return self._loaded()[0]

    @property
    def paths(self) -> list[str]:
        return self._loaded()[1]

    @property
    def vectors(self) -> np.ndarray:
        """[N, D] normalised image embeddings in the stored dtype, rows in `ids` order."""
        return self._loaded()[2]

    def __len__(self) -> int:
        return len(self.ids)

    def skipped(self) -> dict[str, str]:
        """{path: reason} of files in the folder that are not readable images."""
        return {path: reason for path, (_, _, reason) in self.store.skipped().items()}

    def report(self) -> dict | None:
        """What the last update did (also in INDEX/report.json)."""
        return self.store.report()

    def row_of(self, image_id: int) -> int:
        ids = self.ids
        row = int(np.searchsorted(ids, image_id))
        if row >= len(ids) or ids[row] != image_id:
            raise KeyError(f"no image with id {image_id} in {self.store.path}")
        return row

    # -- updating ----------------------------------------------------------------------------------

    def update(self, chunk_size: int = 1024, workers: int | None = None, progress: bool = True) -> dict:
        """Embed new and changed files of the folder, forget deleted ones; returns the report.

        Safe to interrupt at any point: the next update resumes after the last complete chunk."""
        if not self.store.writable:
            raise SearchIndexError(f"{self.store.path} was opened read-only; open it with writable=True to update")
        start = time.time()
        encoder = self.encoder
        found, left_out = files_lib.walk(self.root, exclude=self.store.path)
        known, skipped = self.store.files(), self.store.skipped()
        current = {entry.path: entry for entry in found}
        gone = sorted(set(known) - set(current)) + sorted(set(skipped) - set(current))
        removed_ids = self.store.remove(gone)
        todo = [e for e in found
                if (e.path not in known or known[e.path][1:] != e.fingerprint)
                and (e.path not in skipped or skipped[e.path][:2] != e.fingerprint)]
        changed = sum(e.path in known or e.path in skipped for e in todo)
        embedded, failed = 0, []
        for chunk in embed_chunks(encoder, self.root, todo, chunk_size=chunk_size, workers=workers,
                                  progress=progress):
            self.store.add_chunk(chunk.entries, chunk.sizes, chunk.vectors)
            if chunk.failed:
                self.store.record_skipped(chunk.failed)
            embedded += len(chunk.entries)
            failed += chunk.failed
        elapsed = time.time() - start
        compacted = 0
        total_rows = self.store.count() + self.store.dead_rows()
        if self.store.dead_rows() > COMPACT_FRACTION * total_rows:
            compacted = self.store.compact(chunk_size)
        self._remove_thumbnails(removed_ids + [known[e.path][0] for e in todo if e.path in known])
        self.refresh()
        ann_state = self._update_ann()
        all_skipped = self.store.skipped()
        report = {
            "finished": now(), "root": self.root, "images": len(self), "files_found": len(found),
            "new": len(todo) - changed, "changed": changed, "removed": len(gone), "embedded": embedded,
            "unchanged": len(found) - len(todo), "failed_now": [{"path": e.path, "reason": r} for e, r in failed],
            "skipped": [{"path": p, "reason": r} for p, (_, _, r) in sorted(all_skipped.items())]
            + [{"path": p, "reason": r} for p, r in left_out],
            "seconds": round(elapsed, 3), "images_per_second": round(embedded / elapsed, 2) if elapsed else None,
            "compacted_rows": compacted, "ann": ann_state, "model": describe(self.store.manifest["model"]),
        }
        self.store.write_report(report)
        return report

    def _remove_thumbnails(self, ids: Sequence[int]) -> None:
        folder = os.path.join(self.store.path, THUMBS)
        for image_id in ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, f"{image_id}.jpg"))

    # -- approximate search ----------------------------------------------------------------------------

    def _wants_ann(self) -> bool:
        mode = self.store.manifest["ann"]
        return mode == "on" or (mode == "auto" and len(self) >= ann_lib.AUTO_THRESHOLD)

    def _update_ann(self) -> str:
        """Bring INDEX/ann.faiss in line with the images (build, sync or delete it)."""
        file = os.path.join(self.store.path, ANN_FILE)
        if not self._wants_ann() or len(self) == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(file)
            return "none"
        self._ann = None
        ann = self.ann_index(save=True)
        return f"{len(ann)} vectors in {ann.nlist} cells"

    def ann_index(self, save: bool = False) -> ann_lib.AnnIndex:
        """The ANN index over the current images: loaded, synced or built (and saved if `save`)."""
        if self._ann is not None:
            return self._ann
        file = os.path.join(self.store.path, ANN_FILE)
        trained_on = int(self.store.get("ann_trained_on", "0"))
        ann, dirty = None, False
        if os.path.exists(file) and trained_on and not len(self) > ann_lib.RETRAIN_GROWTH * trained_on:
            ann = ann_lib.AnnIndex.load(file, trained_on)
            added, removed = ann.sync(self.ids, self.vectors)
            dirty = bool(added or removed)
        if ann is None:
            ann = ann_lib.AnnIndex.build(self.vectors, self.ids)
            dirty = True
        if dirty and save and self.store.writable:
            ann.save(file)
            self.store.put("ann_trained_on", ann.trained_on)
        self._ann = ann
        return ann

    # -- queries ---------------------------------------------------------------------------------------

    def embed_text(self, text: str | Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """Normalised embedding [D] of a text ([n, D] of a list), optionally prompt-ensembled."""
        texts = [text] if isinstance(text, str) else list(text)
        features = self.encoder.encode_texts(texts, templates)
        return features[0] if isinstance(text, str) else features

    def embed_image(self, image) -> np.ndarray:
        """Normalised embedding [D] of an image: a file path, a PIL image, or an indexed image's id."""
        if isinstance(image, (int, np.integer)):
            return normalise(self.vectors[self.row_of(int(image))])
        if isinstance(image, (str, os.PathLike)):
            try:
                image = files_lib.open_upright(os.fspath(image))
            except files_lib.UnreadableImage as error:
                raise ValueError(f"query image {os.fspath(image)!r} is not readable: {error}") from None
        if not isinstance(image, Image.Image):
            raise TypeError(f"image must be a path, a PIL image or an image id, not {type(image).__name__}")
        pixels = files_lib.model_input(image, self.encoder.image_size, self.encoder.family)
        return self.encoder.encode_images(pixels[None])[0]

    def query_vector(self, text: str | None = None, *, image=None, vector=None, plus: str | None = None,
                     templates: Sequence[str] | None = None) -> np.ndarray:
        """The normalised sum of the normalised embeddings of everything given."""
        parts = []
        for words in (text, plus):
            if words is not None:
                if not words.strip():
                    raise ValueError("empty query text")
                parts.append(self.embed_text(words, templates))
        if image is not None:
            parts.append(self.embed_image(image))
        if vector is not None:
            vector = np.asarray(vector, np.float32).reshape(-1)
            if vector.shape != (self.store.manifest["embed_dim"],):
                raise ValueError(f"query vector has shape {vector.shape}; this index's embeddings have "
                                 f"{self.store.manifest['embed_dim']} dimensions")
            parts.append(normalise(vector))
        if not parts:
            raise ValueError("nothing to search for: give a text, an image or a vector")
        return normalise(np.sum(parts, axis=0))

    def search(self, text: str | None = None, *, image=None, vector=None, plus: str | None = None, k: int = 10,
               templates: Sequence[str] | None = None, method: str = "auto") -> list[Hit]:
        """The k images most similar to the query (text, image, vector, or a sum of them), best first."""
        query = self.query_vector(text, image=image, vector=vector, plus=plus, templates=templates)
        return self.search_vectors(query[None], k=k, method=method)[0]

    def search_vectors(self, queries: np.ndarray, k: int = 10, method: str = "auto") -> list[list[Hit]]:
        """Hits of each normalised query vector [Q, D]."""
        if method not in METHODS:
            raise ValueError(f"search method {method!r}; valid: {', '.join(METHODS)}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        ids, paths, vectors = self._loaded()
        if not len(ids):
            return [[] for _ in queries]
        use_ann = method == "ann" or (method == "auto" and self._wants_ann())
        if use_ann:
            scores, hit_ids = self.ann_index().search(queries, k)
            rows = np.searchsorted(ids, hit_ids)
            valid = hit_ids >= 0
        else:
            if self._exact is None:
                self._exact = ExactSearch(vectors)
            scores, rows = self._exact.search(queries, k)
            valid = np.ones_like(rows, bool)
        results = []
        for q in range(len(queries)):
            results.append([Hit(int(ids[r]), paths[r], os.path.join(self.root, paths[r]), float(s))
                            for r, s, ok in zip(rows[q], scores[q], valid[q]) if ok])
        return results

    def classify(self, labels: Sequence[str], templates: Sequence[str] | None = None,
                 block: int = 65_536) -> list[tuple[str, str, float]]:
        """Zero-shot label of every image: [(path, best label, its cosine similarity)] in id order."""
        labels = list(labels)
        if not labels or any(not str(label).strip() for label in labels):
            raise ValueError(f"labels must be non-empty texts, got {labels!r}")
        weights = self.embed_text(labels, templates)  # [L, D]
        out = []
        vectors = self.vectors
        for start in range(0, len(vectors), block):
            scores = np.asarray(vectors[start : start + block], np.float32) @ weights.T
            best = scores.argmax(axis=1)
            out += [(self.paths[start + i], labels[b], float(scores[i, b])) for i, b in enumerate(best)]
        return out
