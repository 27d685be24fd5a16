"""Sources: each spec kind as a list of read units and a tf.data reader per unit.

Every source produces the same raw element, before any decoding:

    {"image": tf.string []       encoded image bytes (JPEG, PNG, WebP, GIF, BMP), "" if missing
     "captions": tf.string [n]   the example's valid captions (UTF-8, non-empty), n >= 0
     "label": tf.int64 []        class index, -1 where the source has none
     "fault": tf.int32 []}       FAULT_NONE, or why the element is unusable (see below)

A source is a list of *units* (a tar shard, a TFRecord file, a TFDS file instruction, a
chunk of a folder listing or CSV, a range of demo indices), each named by a string, and
`read_unit(unit)` turning one unit's name (a tf.string tensor) into its elements in a
fixed order.  The pipeline owns order, shuffling and host sharding; sources only read.

Faults are data, not exceptions: a shard that cannot be read (or is truncated) yields its
good elements and then one element with FAULT_SHARD; a missing or unreadable image file
yields FAULT_IMAGE; invalid or empty captions are dropped from "captions" (an example with
none left is marked FAULT_CAPTION by the training pipeline, which skips and counts it).
This module owns the fault codes.

Readers of files are Python generators (tar_stream and TFRecord parsing through tf.io.gfile,
so gs:// works); they hand tf.data chunks of READ_CHUNK elements, because crossing from
Python into tf.data costs far more per element than the parsing itself.  The byte-heavy
work, decoding, happens later in the TF graph.
"""
from __future__ import annotations

import abc
import csv
import json
import logging
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from clip_jax.data import dataset_spec as spec_lib
from clip_jax.data import tar_stream

log = logging.getLogger(__name__)

# A shard that cannot be read: damaged (tar_stream) or refused by the file system (tf.io.gfile).
_SHARD_ERRORS = (*tar_stream.READ_ERRORS, tf.errors.OpError)

FAULT_NONE, FAULT_SHARD, FAULT_IMAGE = 0, 1, 2
FAULT_CAPTION = 3  # no valid caption: assigned by the training pipeline (after giving label-only sources prompts)
FAULT_LABEL = 4  # no label, or one outside the class names: assigned by the pipeline when it yields labels
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
CHUNK = 1000  # examples per unit for list-backed sources (folder, csv, demo)
READ_CHUNK = 64  # raw elements per crossing from a Python reader into tf.data

RAW_SIGNATURE = {
    "image": tf.TensorSpec([], tf.string),
    "captions": tf.TensorSpec([None], tf.string),
    "label": tf.TensorSpec([], tf.int64),
    "fault": tf.TensorSpec([], tf.int32),
}
# A chunk of raw elements: captions flattened, with each element's caption count.
_CHUNK_SIGNATURE = {
    "image": tf.TensorSpec([None], tf.string),
    "captions": tf.TensorSpec([None], tf.string),
    "num_captions": tf.TensorSpec([None], tf.int32),
    "label": tf.TensorSpec([None], tf.int64),
    "fault": tf.TensorSpec([None], tf.int32),
}


def raw_element(image: bytes = b"", captions: Sequence[str] = (), label: int = -1, fault: int = FAULT_NONE) -> dict:
    return {
        "image": image,
        "captions": np.array([c.encode("utf-8") for c in captions], dtype=object).reshape(-1),
        "label": np.int64(label),
        "fault": np.int32(fault),
    }


def valid_caption(data: bytes | str | None) -> str | None:
    """The caption as str if it is valid UTF-8 with visible text, else None."""
    if data is None:
        return None
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return data if data.strip() else None


class Source(abc.ABC):
    """Base: `units`, `read_unit`, and what the source knows about itself."""

    def __init__(self, spec: spec_lib.SourceSpec):
        self.spec = spec
        self.units: list[str] = []
        self.class_names: list[str] | None = None
        self.has_captions = True

    @abc.abstractmethod
    def read_unit(self, unit: tf.Tensor) -> tf.data.Dataset:
        """The raw elements of one unit (a shard, a file, a chunk of a file list)."""

    def count(self) -> int:
        """Number of raw elements (reads the data where the source does not know it)."""
        return int(self.ordered().reduce(np.int64(0), lambda n, _: n + 1))

    def labels(self) -> np.ndarray | None:
        """The label of every raw element (-1 where none) without decoding any image, for
        checks before evaluation; None where the source cannot tell cheaply (TFDS and demo
        know their class names instead; TFRecord would need every record parsed)."""
        return None

    def ordered(self) -> tf.data.Dataset:
        """All elements, units in order: for evaluation and tools."""
        units = tf.data.Dataset.from_tensor_slices(tf.constant(self.units, tf.string))
        return units.flat_map(self.read_unit)


class _GeneratorSource(Source):
    """A source whose units are read by a Python generator `_generate(unit: str)`."""

    @abc.abstractmethod
    def _generate(self, unit: str) -> Iterator[dict]:
        """Yield the raw elements of one unit, as `raw_element` dicts."""

    def read_unit(self, unit: tf.Tensor) -> tf.data.Dataset:
        chunks = tf.data.Dataset.from_generator(
            lambda name: _chunked(self._generate(name.decode("utf-8"))), args=(unit,), output_signature=_CHUNK_SIGNATURE
        )
        return chunks.map(_split_captions).unbatch().map(_plain_captions)


def _chunked(elements: Iterator[dict]) -> Iterator[dict]:
    """raw_element dicts -> chunks of up to READ_CHUNK of them (_CHUNK_SIGNATURE)."""
    chunk = []
    for element in elements:
        chunk.append(element)
        if len(chunk) == READ_CHUNK:
            yield _stack(chunk)
            chunk = []
    if chunk:
        yield _stack(chunk)


def _stack(elements: list[dict]) -> dict:
    captions = [element["captions"] for element in elements]
    return {
        "image": np.array([element["image"] for element in elements], dtype=object),
        "captions": np.concatenate(captions),
        "num_captions": np.array([len(c) for c in captions], np.int32),
        "label": np.array([element["label"] for element in elements], np.int64),
        "fault": np.array([element["fault"] for element in elements], np.int32),
    }


def _split_captions(chunk: dict) -> dict:
    captions = tf.RaggedTensor.from_row_lengths(chunk["captions"], chunk["num_captions"])
    return {"image": chunk["image"], "captions": captions, "label": chunk["label"], "fault": chunk["fault"]}


def _plain_captions(element: dict) -> dict:
    """Unbatched ragged captions are dense already; give them RAW_SIGNATURE's spec."""
    return {**element, "captions": tf.ensure_shape(element["captions"], [None])}


def _group_key(name: str) -> tuple[str | None, str]:
    """(example key, lower-case extension) of a tar member's name in the WebDataset layout,
    or (None, "") for what is not an example's file: names without an extension, hidden
    files such as macOS's ._foo."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or base.startswith("."):
        return None, ""
    return f"{directory}/{stem}", ext.lower()


class WdsSource(_GeneratorSource):
    """WebDataset tar shards: members `key.ext` grouped by key, as img2dataset writes them.

    Image from the first of key.{jpg,jpeg,png,webp,gif,bmp}; captions from key.json's
    "captions" list if there is one (several captions per image, as data/build_wds.py
    writes for COCO), else key.txt, else key.json's "caption"; label from key.cls.
    """

    def __init__(self, spec):
        super().__init__(spec)
        self.units = spec_lib.expand_paths(spec.target, spec.text)

    def _generate(self, path):
        group_key, group = None, {}
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                for name, data in tar_stream.members(f):
                    key, ext = _group_key(name)
                    if key is None:
                        continue
                    if key != group_key and group:
                        yield self._example(group)
                        group = {}
                    group_key = key
                    group[ext] = data
            if group:
                yield self._example(group)
        except _SHARD_ERRORS as error:
            # The group being read when the shard broke may be incomplete: drop it.
            log.warning("skipping the rest of shard %s: %s", path, error)
            yield raw_element(fault=FAULT_SHARD)

    def labels(self):
        """One label per example (key group), from the .cls members only: the tar headers
        are read and the other members skipped (seeked over in uncompressed shards)."""
        out = []
        for path in self.units:
            group_key, label = None, None
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    for name, data in tar_stream.members(f, wanted=lambda name: _group_key(name)[1] == "cls"):
                        key, ext = _group_key(name)
                        if key is None:
                            continue
                        if key != group_key and group_key is not None:
                            out.append(label)
                            label = None
                        group_key = key
                        if ext == "cls":
                            label = _parse_label(data)
                    if group_key is not None:
                        out.append(label)
            except _SHARD_ERRORS as error:
                log.warning("label scan: skipping the rest of shard %s: %s", path, error)
        return np.array([-1 if label is None else label for label in out], np.int64)

    @staticmethod
    def _example(group: dict) -> dict:
        image = next((group[e] for e in IMAGE_EXTENSIONS if e in group), None)
        meta = {}
        if "json" in group:
            try:
                meta = json.loads(group["json"])
                meta = meta if isinstance(meta, dict) else {}
            except ValueError:
                pass
        if isinstance(meta.get("captions"), list):
            captions = meta["captions"]
        elif "txt" in group:
            captions = [group["txt"]]
        else:
            captions = [meta.get("caption")]
        captions = [c if isinstance(c, (str, bytes)) else None for c in captions]
        captions = [c for c in map(valid_caption, captions) if c is not None]
        label = _parse_label(group["cls"]) if "cls" in group else -1
        if not image:
            return raw_element(captions=captions, label=label, fault=FAULT_IMAGE)
        return raw_element(image, captions, label)


class TFRecordSource(_GeneratorSource):
    """tf.train.Example files.  Keys (options image_key, text_key, label_key) default to the
    first present of image|image/encoded|jpg, caption|text|txt|captions, label|image/class/label."""

    IMAGE_KEYS = ("image", "image/encoded", "jpg")
    TEXT_KEYS = ("caption", "text", "txt", "captions")
    LABEL_KEYS = ("label", "image/class/label")

    def __init__(self, spec):
        super().__init__(spec)
        self.units = spec_lib.expand_paths(spec.target, spec.text)

    def _key(self, feature, option, defaults):
        keys = [self.spec.options[option]] if option in self.spec.options else defaults
        return next((k for k in keys if k in feature), None)

    def _generate(self, path):
        try:
            for record in tf.compat.v1.io.tf_record_iterator(path):
                feature = tf.train.Example.FromString(record).features.feature
                image_key = self._key(feature, "image_key", self.IMAGE_KEYS)
                text_key = self._key(feature, "text_key", self.TEXT_KEYS)
                label_key = self._key(feature, "label_key", self.LABEL_KEYS)
                image_bytes = feature[image_key].bytes_list.value if image_key else []
                image = image_bytes[0] if image_bytes else b""
                captions = list(feature[text_key].bytes_list.value) if text_key else []
                captions = [c for c in map(valid_caption, captions) if c is not None]
                labels = feature[label_key].int64_list.value if label_key else []
                yield raw_element(image, captions, labels[0] if labels else -1, FAULT_NONE if image else FAULT_IMAGE)
        except (tf.errors.OpError, OSError) as error:
            log.warning("skipping the rest of TFRecord file %s: %s", path, error)
            yield raw_element(fault=FAULT_SHARD)


def _parse_label(data: bytes) -> int:
    try:
        return int(data.strip())
    except ValueError:
        return -1


def _list_units(n: int) -> list[str]:
    return [f"{start}:{min(start + CHUNK, n)}" for start in range(0, n, CHUNK)]


class FolderSource(_GeneratorSource):
    """An image folder with one subfolder per class; labels follow sorted class names."""

    def __init__(self, spec):
        super().__init__(spec)
        root = spec.target
        if not tf.io.gfile.isdir(root):
            raise ValueError(
                f"dataset spec {spec.text!r}: {root!r} is not a directory "
                "(folder: wants a directory of class subfolders)"
            )
        self.class_names = sorted(
            d.rstrip("/") for d in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(os.path.join(root, d))
        )
        if not self.class_names:
            raise ValueError(f"dataset spec {spec.text!r}: {root!r} has no class subfolders")
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(self.class_names):
            for file in sorted(tf.io.gfile.listdir(os.path.join(root, name))):
                if file.rpartition(".")[2].lower() in IMAGE_EXTENSIONS:
                    self.files.append((os.path.join(root, name, file), label))
        if not self.files:
            raise ValueError(
                f"dataset spec {spec.text!r}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}"
            )
        self.has_captions = False
        self.units = _list_units(len(self.files))

    def count(self):
        return len(self.files)

    def labels(self):
        return np.array([label for _, label in self.files], np.int64)

    def _generate(self, unit):
        start, end = map(int, unit.split(":"))
        for path, label in self.files[start:end]:
            yield _read_image_file(path, [], label)


class CsvSource(_GeneratorSource):
    """A CSV (or TSV with sep=tab) of image paths and captions; paths relative to the file.

    Options: image=COLUMN (default image), caption=COLUMN (default caption), sep=, or tab,
    label=COLUMN (integer class labels, for classification; with it the caption column
    may be absent).
    """

    def __init__(self, spec):
        super().__init__(spec)
        (path,) = spec_lib.expand_paths(spec.target, spec.text)[:1] or [None]
        sep = {"tab": "\t", "comma": ","}.get(spec.options.get("sep", ","), spec.options.get("sep", ","))
        image_col, caption_col = spec.options.get("image", "image"), spec.options.get("caption", "caption")
        label_col = spec.options.get("label")
        with tf.io.gfile.GFile(path, "r") as f:
            reader = csv.DictReader(f, delimiter=sep)
            columns = reader.fieldnames or []
            required = [(image_col, "image")] + [(label_col, "label")] * bool(label_col)
            if not label_col or "caption" in spec.options or caption_col in columns:
                required.append((caption_col, "caption"))
            for column, option in required:
                if column not in columns:
                    raise ValueError(
                        f"dataset spec {spec.text!r}: no column {column!r} in {path!r}; its columns are {columns}. "
                        f"Name the column with ?{option}=COLUMN"
                    )
            base = os.path.dirname(path)
            self.rows, labels = [], []
            for line, row in enumerate(reader, start=2):
                self.rows.append((os.path.join(base, row[image_col]), row.get(caption_col)))
                if label_col:
                    try:
                        labels.append(int(row[label_col]))
                    except (TypeError, ValueError):
                        raise ValueError(
                            f"dataset spec {spec.text!r}: line {line} of {path!r}: label "
                            f"{row[label_col]!r} in column {label_col!r} is not an integer"
                        ) from None
        if not self.rows:
            raise ValueError(f"dataset spec {spec.text!r}: {path!r} has no rows")
        self.row_labels = np.array(labels, np.int64) if label_col else None
        self.has_captions = caption_col in columns
        self.units = _list_units(len(self.rows))

    def count(self):
        return len(self.rows)

    def labels(self):
        return self.row_labels if self.row_labels is not None else np.full(len(self.rows), -1, np.int64)

    def _generate(self, unit):
        start, end = map(int, unit.split(":"))
        for i in range(start, end):
            path, caption = self.rows[i]
            label = int(self.row_labels[i]) if self.row_labels is not None else -1
            yield _read_image_file(path, [caption] if caption is not None else [], label)


def _read_image_file(path: str, captions: list, label: int) -> dict:
    captions = [c for c in map(valid_caption, captions) if c is not None]
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except (tf.errors.OpError, OSError) as error:
        log.warning("skipping unreadable image %s: %s", path, error)
        return raw_element(captions=captions, label=label, fault=FAULT_IMAGE)
    return raw_element(data, captions, label, FAULT_NONE if data else FAULT_IMAGE)


class TfdsSource(Source):
    """A prepared TFDS dataset (TFRecord format), read file instruction by file instruction.

    Target NAME[:SPLIT] (split default "train", TFDS slicing allowed); option data_dir.
    Image: the first Image feature; captions: Text features (also inside a Sequence, as in
    coco_captions); label: the first ClassLabel feature.  Nothing is downloaded: prepare the
    dataset with `tfds build` (or tfds.load) first.
    """

    def __init__(self, spec):
        super().__init__(spec)
        import tensorflow_datasets as tfds

        name, _, split = spec.target.partition(":")
        split = split or "train"
        try:
            builder = tfds.builder(name, data_dir=spec.options.get("data_dir"))
        except Exception as error:  # TFDS raises several types for unknown names
            raise ValueError(f"dataset spec {spec.text!r}: TFDS has no dataset {name!r} ({error})") from error
        if not builder.is_prepared():
            raise ValueError(
                f"dataset spec {spec.text!r}: TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; "
                f"run `tfds build {name}` (or pass ?data_dir=DIR where it is)"
            )
        info = builder.info
        if str(info.file_format).split(".")[-1].lower() != "tfrecord":
            raise ValueError(
                f"dataset spec {spec.text!r}: only TFRecord-format TFDS datasets are supported, not {info.file_format}"
            )
        try:
            instructions = info.splits[split].file_instructions
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"dataset spec {spec.text!r}: no split {split!r}; valid splits: {sorted(info.splits)}"
            ) from error
        self.num_examples = sum(i.take for i in instructions)
        self.units = [f"{i.skip}:{i.take}:{i.filename}" for i in instructions if i.take]
        self.features = info.features
        self.image_key, self.text_paths, self.label_key = _tfds_fields(info.features)
        if self.image_key is None:
            raise ValueError(f"dataset spec {spec.text!r}: {name!r} has no top-level Image feature")
        if self.label_key is not None:
            self.class_names = list(info.features[self.label_key].names)
        self.has_captions = bool(self.text_paths)

    def count(self):
        return self.num_examples

    def read_unit(self, unit):
        import tensorflow_datasets as tfds

        parts = tf.strings.split(unit, ":", maxsplit=2)
        skip, take = tf.strings.to_number(parts[0], tf.int64), tf.strings.to_number(parts[1], tf.int64)
        records = tf.data.TFRecordDataset(parts[2]).skip(skip).take(take)
        decoders = {self.image_key: tfds.decode.SkipDecoding()}

        def to_raw(record):
            example = self.features.deserialize_example(record, decoders=decoders)
            captions = [tf.reshape(_get_path(example, path), [-1]) for path in self.text_paths]
            captions = tf.concat(captions, 0) if captions else tf.zeros([0], tf.string)
            captions = tf.boolean_mask(captions, tf.strings.length(tf.strings.strip(captions)) > 0)
            label = tf.cast(example[self.label_key], tf.int64) if self.label_key else tf.constant(-1, tf.int64)
            return {
                "image": example[self.image_key],
                "captions": captions,
                "label": label,
                "fault": tf.constant(FAULT_NONE),
            }

        return records.map(to_raw)


def _get_path(example, path):
    for key in path:
        example = example[key]
    return example


def _tfds_fields(features):
    import tensorflow_datasets as tfds

    image_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
    label_key = next((k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), None)
    text_paths = []
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Text):
            text_paths.append((key,))
        elif isinstance(feature, tfds.features.Sequence):
            inner = feature.feature
            if isinstance(inner, tfds.features.Text):
                text_paths.append((key,))
            elif isinstance(inner, tfds.features.FeaturesDict):
                text_paths += [(key, k) for k, f in inner.items() if isinstance(f, tfds.features.Text)]
    return image_key, text_paths, label_key


class DemoSource(_GeneratorSource):
    """The synthetic dataset of clip_jax.data.demo: demo:SPLIT[?size=32&n=N&seed=0&style=filled]."""

    def __init__(self, spec):
        super().__init__(spec)
        from clip_jax.data import demo

        self.dataset = demo.DemoDataset(
            spec.target,
            image_size=int(spec.options.get("size", demo.DEFAULT_SIZE)),
            num_examples=int(spec.options["n"]) if "n" in spec.options else None,
            seed=int(spec.options.get("seed", 0)),
            style=spec.options.get("style", "filled"),
        )
        self.class_names = demo.class_prompts()
        self.units = _list_units(len(self.dataset))

    def count(self):
        return len(self.dataset)

    def _generate(self, unit):
        start, end = map(int, unit.split(":"))
        for index in range(start, end):
            example = self.dataset.example(index)
            yield raw_element(example["png"], [example["caption"]], example["label"])


_SOURCES: dict[str, Callable[[spec_lib.SourceSpec], Source]] = {
    "wds": WdsSource,
    "tfrecord": TFRecordSource,
    "tfds": TfdsSource,
    "folder": FolderSource,
    "csv": CsvSource,
    "demo": DemoSource,
}


def open_sources(spec: str) -> list[Source]:
    """Parse `spec` and open each source (listing files, checking they exist)."""
    return [_SOURCES[s.kind](s) for s in spec_lib.parse(spec)]
