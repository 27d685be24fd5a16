"""Training and evaluation pipelines: sources -> examples -> per-host batches.

Training order, per source (one per '+' in the spec; clip_jax.data.order owns it): each
epoch permutes the source's units with a seed of (seed, source, epoch) and cuts them into
blocks of `units_per_block` units; a block's units are interleaved one example at a time
and shuffled with a buffer of `shuffle_buffer` seeded by (seed, source, epoch, block).
Hosts share the blocks out (or, with fewer blocks than hosts, every P-th example of each).
None of this depends on the host count, so a run can continue on another one.
Sources are mixed by weight with a stateless draw per output index m, and example m's
crop and caption choice are drawn from (seed, host, m).  Every example is therefore a
pure function of where it sits in the stream.

Resume mechanism: the position of the last example in each batch travels with the batch
(tf.data computes it, so prefetching does not blur it).  The state is, per source, an
order.py position (the block being read and how far, plus any work items left by a
resume on another host count), the next mix index m and the fault counters: a few dozen
integers of JSON.  `set_state` rebuilds the pipeline at that block and skips the raw
(undecoded) examples already read, so a resume re-reads at most one block's shards and
decodes nothing twice; `set_host_states` takes every host's state and, on another host
count, deals the rest of the epoch out anew.  We did not use tf.data's own iterator
checkpoints: they save the shuffle buffers (gigabytes of encoded images at buffer 10k),
cannot save Python-generator readers, and cannot change the host count.

Faults (codes owned by clip_jax.data.sources): a shard that breaks, an image file that
cannot be read, an example with no valid caption are flagged by the sources; bytes that
do not decode raise inside the map and are dropped by ignore_errors, and counted from the
gap they leave in m.  Counters travel
with the batches, like the positions, so `stats()` is exact for the batches delivered.

Images: with transform "fast" or "exact" the host finishes the training crop
(image_ops.train_pixels) and batches it as uint8 "images" (`uint8_images=True`, the
default: normalised inside the jitted step by clip_jax.preprocess.normalize_images, a
quarter of float32's bytes cross to the device) or, with `uint8_images=False`, normalised
with the model family's mean and std (`family`) as float32.  With transform "device" the
host only decodes: batches carry each crop window as WINDOW_KEYS (image_ops.train_window)
and the train step resizes them (clip_jax.window_resize.crops).

tf.data settings: map and interleave use AUTOTUNE parallelism on tf.data's private
thread pool of `num_threads` threads (default: all cores); deterministic order is
required for resume and set explicitly.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from clip_jax.data import image_ops, text_ops
from clip_jax.data import order as order_lib
from clip_jax.data import sources as sources_lib
from clip_jax.data.sources import FAULT_CAPTION, FAULT_IMAGE, FAULT_LABEL, FAULT_NONE, FAULT_SHARD
from clip_jax.preprocess import normalization

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: positions per source as order.py's work items
COUNTERS = ("skipped_shards", "skipped_images", "skipped_captions", "skipped_labels")
AUTOTUNE = tf.data.AUTOTUNE
WINDOW_KEYS = ("canvas", "boxes", "valid")  # train_transform="device"'s image fields


def _seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def _options(num_threads: int | None) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    if num_threads:
        options.threading.private_threadpool_size = num_threads
    return options


def _source_stream(source, source_id, *, seed, layout, position, epochs, shuffle_buffer, class_names=None,
                   templates=None):
    """Raw elements of one source for this host from `position` (order.py), each with
    "pos" = [work item since `position`, next element of that item's block] and "epoch"."""
    num_units, per_block = layout.num_units, layout.per_block
    unit_names = tf.constant(source.units, tf.string)
    base = tf.constant(_seed(seed, source_id), tf.int64)
    first_offset = tf.constant(position["offset"], tf.int64)
    source_id = tf.constant(source_id, tf.int32)

    def block_stream(epoch, block):
        order = tf.argsort(tf.random.stateless_uniform([num_units], seed=tf.stack([base, epoch])))
        members = tf.range(block * per_block, tf.minimum((block + 1) * per_block, num_units))
        names = tf.gather(unit_names, tf.gather(order, members))
        ds = tf.data.Dataset.from_tensor_slices(names).interleave(
            source.read_unit, cycle_length=per_block, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True
        )
        block_seed = tf.bitwise.bitwise_xor(base, epoch * 1_000_003 + block)
        return ds.shuffle(shuffle_buffer, seed=block_seed, reshuffle_each_iteration=False).enumerate()

    def read_item(item, epoch, block, modulus, starts, filtered):
        ds = block_stream(epoch, block).skip(tf.where(tf.equal(item, 0), first_offset, tf.constant(0, tf.int64)))
        if filtered:
            ds = ds.filter(lambda k, raw: k >= tf.gather(starts, k % modulus))
        return ds.map(lambda k, raw: {**raw, "source": source_id, "pos": tf.stack([item, k + 1]), "epoch": epoch})

    pending = position["pending"]
    streams = []
    if pending:
        columns = (list(range(len(pending))), *order_lib.padded_items(pending))
        items = tf.data.Dataset.from_tensor_slices(tuple(tf.constant(c, tf.int64) for c in columns))
        streams.append(items.flat_map(lambda *item: read_item(*item, filtered=True)))

    own = layout.own_blocks()
    own_blocks = tf.constant(own, tf.int64)
    _, _, modulus, starts = layout.own_item(0, own[0])
    modulus, starts = tf.constant(modulus, tf.int64), tf.constant(starts, tf.int64)
    epoch0, index0, per_epoch = position["epoch"], position["index"], len(own)

    def epoch_items(epoch):
        first = tf.where(tf.equal(epoch, epoch0), tf.constant(index0, tf.int64), tf.constant(0, tf.int64))
        return tf.data.Dataset.range(first, per_epoch).map(
            lambda t: (len(pending) + (epoch - epoch0) * per_epoch + t - index0, epoch, tf.gather(own_blocks, t))
        )

    epoch_ids = tf.data.Dataset.range(epoch0, epochs) if epochs is not None else tf.data.Dataset.counter(epoch0)
    streams.append(epoch_ids.flat_map(epoch_items).flat_map(
        lambda item, epoch, block: read_item(item, epoch, block, modulus, starts, filtered=layout.stride)))
    stream = streams[0] if len(streams) == 1 else streams[0].concatenate(streams[1])
    names = class_names if class_names is not None else source.class_names
    if names is not None and (class_names is not None or not source.has_captions):
        # Given class names (fine-tuning on labels, FLYP) replace the source's own captions.
        stream = stream.map(_prompt_captions(names, templates or DEFAULT_TEMPLATES, replace=class_names is not None))
    return stream


DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _prompt_captions(class_names: Sequence[str], templates: Sequence[str], replace: bool = False):
    """Examples with a label and no caption (every labelled example, with `replace`) train
    on captions made from their class name: every template filled with it, of which
    `_decode` picks one per example at random."""
    prompts = tf.constant([[t.format(name.replace("_", " ")) for t in templates] for name in class_names])
    count = len(class_names)

    def add(raw):
        uncaptioned = tf.logical_or(tf.constant(replace), tf.equal(tf.size(raw["captions"]), 0))
        use = tf.logical_and(uncaptioned, tf.logical_and(raw["label"] >= 0, raw["label"] < count))
        captions = tf.cond(use, lambda: tf.gather(prompts, tf.clip_by_value(raw["label"], 0, count - 1)),
                           lambda: raw["captions"])
        return {**raw, "captions": captions}

    return add


def _track_position(positions, m, raw):
    """scan step: the sources' positions right after raw element m (before any is dropped)."""
    positions = tf.tensor_scatter_nd_update(positions, [[raw["source"]]], raw["pos"][None])
    return positions, {**raw, "m": m, "positions": positions}


def _count_faults(carry, example):
    """scan step: the COUNTERS after `example`; elements missing between consecutive m
    were dropped by ignore_errors (undecodable images)."""
    last_m, counters = carry
    dropped = example["m"] - last_m - 1
    fault = example["fault"]
    update = tf.stack([
        tf.cast(fault == FAULT_SHARD, tf.int64),
        dropped + tf.cast(fault == FAULT_IMAGE, tf.int64),
        tf.cast(fault == FAULT_CAPTION, tf.int64),
        tf.cast(fault == FAULT_LABEL, tf.int64),
    ])
    counters = counters + update
    return (example["m"], counters), {**example, "counters": counters}


class TrainIterator:
    """Deterministic, resumable iterator of per-host training batches (see module docstring)."""

    def __init__(
        self,
        spec: str,
        *,
        batch_size: int,
        image_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        context_length: int = 77,
        tokenizer: str = "bpe",
        family: str = "clip",
        crop_scale: tuple[float, float] = (0.9, 1.0),
        shuffle_buffer: int = 10_000,
        epochs: int | None = None,
        units_per_block: int = 4,
        num_threads: int | None = None,
        prefetch: int = 2,
        train_transform: str = "fast",
        uint8_images: bool = True,
        trace_dir: str | None = None,
        labels: bool = False,
        class_names: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
    ):
        for name, value in (
            ("batch_size", batch_size),
            ("image_size", image_size),
            ("process_count", process_count),
            ("shuffle_buffer", shuffle_buffer),
            ("units_per_block", units_per_block),
        ):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be None (endless) or positive, got {epochs}")
        if train_transform not in image_ops.TRAIN_TRANSFORMS:
            raise ValueError(f"train_transform must be one of {image_ops.TRAIN_TRANSFORMS}, got {train_transform!r}")
        if train_transform == "device" and not uint8_images:
            raise ValueError("train_transform='device' ships uint8 crop windows for the train step to resize; "
                             "uint8_images=False (normalised float32 images) needs train_transform 'fast' or 'exact'")
        self.spec, self.seed = spec, int(seed)
        self.process_index, self.process_count = process_index, process_count
        self.batch_size, self.image_size, self.context_length = batch_size, image_size, context_length
        self.crop_scale, self.shuffle_buffer, self.epochs = tuple(crop_scale), shuffle_buffer, epochs
        self.units_per_block, self.num_threads, self.prefetch = units_per_block, num_threads, prefetch
        self.train_transform, self.uint8_images = train_transform, bool(uint8_images)
        self.trace_dir = trace_dir
        self.labels = bool(labels)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.templates = None if templates is None else [str(t) for t in templates]
        if self.templates is not None and (not self.templates or any("{}" not in t for t in self.templates)):
            raise ValueError(f"templates must be a non-empty list of strings with a '{{}}' for the class name; "
                             f"got {templates!r}")
        if self.class_names is not None and not self.class_names:
            raise ValueError("class_names is empty; give the name of every class in label order, or None")
        normalization(family)  # an unknown family fails here, before any reading
        self.family = family
        self.tokenize = text_ops.graph_tokenizer(tokenizer, context_length)
        self.sources = sources_lib.open_sources(spec)
        weights = np.array([s.spec.weight for s in self.sources], np.float64)
        self.log_weights = np.log(weights / weights.sum()).astype(np.float32)
        self.layouts = [
            order_lib.Layout(len(s.units), units_per_block, process_index, process_count) for s in self.sources
        ]
        self._state = {
            "version": STATE_VERSION,
            **self._contract(),
            "process_index": process_index,
            "process_count": process_count,
            "sources": [order_lib.start_position() for _ in self.sources],
            "next_index": 0,
            "counters": {name: 0 for name in COUNTERS},
            "examples": 0,
            "batches": 0,
        }
        self._iterator = None
        self._origin = None  # the source positions the running tf.data pipeline started from

    def _contract(self) -> dict:
        """What must be equal for a saved position to mean the same stream."""
        return {"spec": self.spec, "seed": self.seed, "units_per_block": self.units_per_block,
                "shuffle_buffer": self.shuffle_buffer}

    # -- public interface -------------------------------------------------------------

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._origin = [dict(p) for p in self._state["sources"]]
            self._iterator = self.dataset().as_numpy_iterator()
        batch = next(self._iterator)
        state = self._state
        state["sources"] = [
            order_lib.advance(origin, layout, int(item), int(element))
            for origin, layout, (item, element) in zip(self._origin, self.layouts, batch["positions"])
        ]
        state["next_index"] = int(batch["next_index"])
        state["counters"] = dict(zip(COUNTERS, map(int, batch["counters"])))
        state["examples"] += self.batch_size
        state["batches"] += 1
        if self.trace_dir:
            self._trace(batch)
        out = {**batch["images"], "tokens": batch["tokens"]}
        if self.labels:
            out["labels"] = batch["labels"]
        return out

    def get_state(self) -> dict:
        """JSON-serialisable position after the last batch returned."""
        return json.loads(json.dumps(self._state))

    def set_state(self, state: dict) -> None:
        """Continue from `state` (from get_state of an iterator with the same spec, seed and host)."""
        self._check(state, self._state["process_index"], self._state["process_count"])
        self._state = json.loads(json.dumps(state))
        self._iterator = None  # rebuilt lazily from the new state

    def set_host_states(self, states: Sequence[dict]) -> None:
        """Continue the run whose hosts stood at `states` (every host's get_state(), in
        process order).  On the same host count this is set_state(states[this host]); on
        another, the unread rest of every epoch in progress is dealt out to the new hosts
        (order.rebalance: each example of those epochs is read exactly once), the fault
        counters and examples of all old hosts are summed into host 0's, and every host
        starts the next epoch in the new layout."""
        count, index = self._state["process_count"], self._state["process_index"]
        if len(states) == count:
            self.set_state(states[index])
            return
        for i, state in enumerate(states):
            self._check(state, i, len(states))
        sources = [
            order_lib.rebalance([state["sources"][s] for state in states], layout)
            for s, layout in enumerate(self.layouts)
        ]
        first = index == 0
        log.info("data: %d hosts' positions dealt out to %d hosts", len(states), count)
        self.set_state({
            **self._state,
            "sources": sources,
            "next_index": max(state["next_index"] for state in states),
            "counters": {c: sum(state["counters"].get(c, 0) for state in states) if first else 0 for c in COUNTERS},
            "examples": sum(state["examples"] for state in states) if first else 0,
            "batches": states[0]["batches"],
        })

    def _check(self, state, process_index: int, process_count: int) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a data iterator state of version {STATE_VERSION}: {str(state)[:200]}")
        expected = {**self._contract(), "process_index": process_index, "process_count": process_count}
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(
                    f"data iterator state was saved with {key}={state.get(key)!r} but this iterator has "
                    f"{key}={value!r}; the stream would differ"
                )
        if len(state["sources"]) != len(self.sources):
            raise ValueError(
                f"state has {len(state['sources'])} source positions, spec has {len(self.sources)} sources"
            )
        for position in state["sources"]:
            order_lib.check_position(position)

    def _trace(self, batch) -> None:
        """Debugging and tests: append the batch's captions and their epochs to a JSON-lines
        file of this host (`trace_dir` option)."""
        os.makedirs(self.trace_dir, exist_ok=True)
        name = f"process-{self.process_index}-of-{self.process_count}.jsonl"
        captions = [c.decode("utf-8", "replace") for c in batch["captions"]]
        record = {"batch": self._state["batches"], "captions": captions, "epochs": batch["epochs"].tolist()}
        with open(os.path.join(self.trace_dir, name), "a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Stop the background readers (call before deleting the files the spec names)."""
        self._iterator = None

    def __enter__(self) -> "TrainIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Counters for the batches delivered so far (carried across resumes)."""
        return {"examples": self._state["examples"], "batches": self._state["batches"], **self._state["counters"]}

    # -- the tf.data graph ------------------------------------------------------------

    def dataset(self) -> tf.data.Dataset:
        """The tf.data pipeline from the current state (batches carry their own positions)."""
        state = self._state
        m0 = state["next_index"]
        indices = tf.data.Dataset.counter(m0)
        ds = tf.data.Dataset.zip(indices, self._mixed_sources(state, indices))

        # Positions ([work item, next element] per source, order.advance turns them into
        # JSON): right after each raw element, computed before anything is dropped.
        start_positions = tf.constant([[0, p["offset"]] for p in state["sources"]], tf.int64)
        ds = ds.scan(start_positions, lambda positions, m_raw: _track_position(positions, *m_raw))
        ds = ds.map(self._decode, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors()  # undecodable images; counted below from the gaps in m
        # .get: positions saved before a counter existed start it at 0.
        counters0 = tf.constant([state["counters"].get(c, 0) for c in COUNTERS], tf.int64)
        ds = ds.scan((tf.constant(m0 - 1, tf.int64), counters0), _count_faults)
        ds = ds.filter(lambda example: tf.equal(example["fault"], FAULT_NONE))
        ds = self._batch(ds)
        ds = ds.map(self._finish_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.prefetch(self.prefetch).with_options(_options(self.num_threads))

    def _batch(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Batches of `batch_size`; crop windows (transform "device") zero-padded into
        their canvas as they are copied into the batch."""
        if self.train_transform != "device":
            return ds.batch(self.batch_size, drop_remainder=True)
        canvas = tf.TensorShape([*image_ops.canvas_shape(self.image_size), 3])
        shapes = tf.nest.map_structure(lambda spec: spec.shape, ds.element_spec)
        shapes["image"]["canvas"] = canvas
        return ds.padded_batch(self.batch_size, padded_shapes=shapes, drop_remainder=True)

    def _mixed_sources(self, state, indices: tf.data.Dataset) -> tf.data.Dataset:
        """Raw elements of all sources for this host, raw element m drawn from a source by
        the mixture weights with a seed of (host, m): the same draws after a resume."""
        streams = [
            _source_stream(
                source,
                i,
                seed=self.seed,
                layout=self.layouts[i],
                position=state["sources"][i],
                epochs=self.epochs,
                shuffle_buffer=self.shuffle_buffer,
                class_names=self.class_names,
                templates=self.templates,
            )
            for i, source in enumerate(self.sources)
        ]
        if len(streams) == 1:
            return streams[0]
        mix_seed = tf.constant(_seed(self.seed, self.process_index, 0x6D6978), tf.int64)
        logits = tf.constant(self.log_weights[None])

        def choose(m):
            draw = tf.random.stateless_categorical(logits, 1, seed=tf.stack([mix_seed, m]))
            return tf.cast(draw[0, 0], tf.int64)

        return tf.data.Dataset.choose_from_datasets(streams, indices.map(choose), stop_on_empty_dataset=True)

    def _decode(self, raw):
        seed = tf.stack([tf.constant(_seed(self.seed, self.process_index), tf.int64), raw["m"]])
        num_captions = tf.size(raw["captions"], out_type=tf.int32)
        fault = raw["fault"]
        if self.labels:  # classification: an example without a label (or outside the classes) cannot be used
            count = len(self.class_names) if self.class_names is not None else np.iinfo(np.int64).max
            unlabelled = tf.logical_or(raw["label"] < 0, raw["label"] >= count)
            fault = tf.where(tf.logical_and(tf.equal(fault, FAULT_NONE), unlabelled), FAULT_LABEL, fault)
        fault = tf.where(tf.logical_and(tf.equal(fault, FAULT_NONE), tf.equal(num_captions, 0)), FAULT_CAPTION, fault)
        usable = tf.equal(fault, FAULT_NONE)
        crop_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        image = tf.cond(usable, lambda: self._image_fields(raw["image"], crop_seed), self._blank_image_fields)
        choice = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, 2), 0, tf.maximum(num_captions, 1), tf.int32
        )
        caption = tf.cond(num_captions > 0, lambda: raw["captions"][choice], lambda: tf.constant(""))
        return {"image": image, "caption": caption, "fault": fault, "m": raw["m"], "positions": raw["positions"],
                "epoch": raw["epoch"], "label": tf.cast(raw["label"], tf.int32)}

    def _image_fields(self, data, crop_seed) -> dict:
        """{"images": the finished crop} or, for "device", {WINDOW_KEYS: the crop window}."""
        size = self.image_size
        if self.train_transform == "device":  # the window unpadded: padded_batch lays it into its canvas
            window, box = image_ops.train_window(data, size, crop_seed, self.crop_scale)
            return {"canvas": window, "boxes": box, "valid": tf.shape(window)[:2]}
        image = image_ops.train_pixels(data, size, crop_seed, self.crop_scale, transform=self.train_transform)
        if not self.uint8_images:
            image = image_ops.normalize(image, self.family)  # per example, while the crop is in cache
        return {"images": image}

    def _blank_image_fields(self) -> dict:
        """Zeros in the image fields' shapes and types (faulty examples, dropped later)."""
        size = self.image_size
        if self.train_transform == "device":
            return {"canvas": tf.zeros([1, 1, 3], tf.uint8), "boxes": tf.zeros([4]), "valid": tf.ones([2], tf.int32)}
        return {"images": tf.zeros([size, size, 3], tf.uint8 if self.uint8_images else tf.float32)}

    def _finish_batch(self, batch):
        finished = {
            "images": batch["image"],
            "tokens": self.tokenize(batch["caption"]),
            "positions": batch["positions"][-1],
            "next_index": batch["m"][-1] + 1,
            "counters": batch["counters"][-1],
            "labels": batch["label"],
        }
        if self.trace_dir:
            finished.update(captions=batch["caption"], epochs=batch["epoch"])
        return finished


def train_iterator(spec: str, **kwargs) -> TrainIterator:
    """Deterministic, resumable per-host training batches; see TrainIterator for the options.

    it = train_iterator("wds:/data/shards-{00000..00099}.tar", batch_size=256, image_size=224, seed=0)
    batch = next(it)  # {"images": uint8 [256, 224, 224, 3], "tokens": int32 [256, 77]}
    # normalise with clip_jax.preprocess.normalize_images (in the jitted step);
    # uint8_images=False: "images" are float32 [256, 224, 224, 3], normalised for `family`;
    # train_transform="device": WINDOW_KEYS instead of "images", resized by clip_jax.window_resize.crops.

    Labelled data: `class_names` (in label order) and `templates` make every labelled
    example's caption a template, drawn per example, filled with its class name (replacing
    the source's own captions; label-only sources get such captions from their own class
    names anyway); `labels=True` adds "labels" int32 [B] and skips (counting them as
    skipped_labels) examples without a label or with one beyond class_names.
    """
    return TrainIterator(spec, **kwargs)


# -- evaluation -----------------------------------------------------------------------


def eval_batches(
    spec: str,
    *,
    batch_size: int,
    image_size: int,
    process_index: int = 0,
    process_count: int = 1,
    context_length: int = 77,
    tokenizer: str | None = None,
    num_threads: int | None = None,
    family: str = "clip",
) -> Iterator[dict]:
    """Every example once, in a fixed order, split over hosts; all hosts yield the same count.

    Yields {"images": float32 [B, S, S, 3], "labels": int32 [B] (-1 where absent),
    "captions": list of B lists of str, "mask": bool [B]} with padding rows masked out,
    and, if `tokenizer` is given (a spec of text_ops.python_tokenizer), "tokens": a list of B
    int32 [n_captions, context_length] arrays.  Host h takes examples h, h + P, h + 2P, ...
    of the whole stream (every host reads every shard: fine at evaluation scale), and
    pads to ceil(ceil(N / P) / B) batches.  Faulty examples are dropped (and logged).
    `family` is the model's family ("clip", "siglip": image_ops.eval_image).
    """
    normalization(family)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if batch_size < 1 or image_size < 1:
        raise ValueError(f"batch_size and image_size must be positive, got {batch_size}, {image_size}")
    encode = text_ops.python_tokenizer(tokenizer, context_length) if tokenizer else None
    sources = sources_lib.open_sources(spec)
    total = sum(source.count() for source in sources)
    num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
    ds = sources[0].ordered()
    for source in sources[1:]:
        ds = ds.concatenate(source.ordered())
    ds = ds.shard(process_count, process_index).filter(lambda raw: tf.equal(raw["fault"], FAULT_NONE))

    def decode(raw):
        return {
            "image": image_ops.eval_image(raw["image"], image_size, family),
            "label": tf.cast(raw["label"], tf.int32),
            "captions": raw["captions"],
        }

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    ds = ds.padded_batch(batch_size, padding_values={"image": 0.0, "label": -1, "captions": ""})
    ds = ds.prefetch(2).with_options(_options(num_threads))

    produced = 0
    for batch in ds.as_numpy_iterator():
        rows = len(batch["label"])
        yield _eval_batch(batch["image"], batch["label"], batch["captions"], rows, batch_size, image_size, encode)
        produced += 1
    for _ in range(num_batches - produced):
        yield _eval_batch(None, None, None, 0, batch_size, image_size, encode)


def _eval_batch(images, labels, captions, rows, batch_size, image_size, encode):
    out_images = np.zeros((batch_size, image_size, image_size, 3), np.float32)
    out_labels = np.full((batch_size,), -1, np.int32)
    mask = np.zeros((batch_size,), bool)
    texts: list[list[str]] = [[] for _ in range(batch_size)]
    if rows:
        out_images[:rows], out_labels[:rows], mask[:rows] = images, labels, True
        for row in range(rows):
            texts[row] = [c.decode("utf-8") for c in captions[row] if c]
    batch = {"images": out_images, "labels": out_labels, "captions": texts, "mask": mask}
    if encode is not None:
        batch["tokens"] = [encode(t) if t else np.zeros((0, 0), np.int32) for t in texts]
    return batch


def dataset_labels(spec: str) -> np.ndarray | None:
    """Every example's label (-1 where none) in order, read without decoding images (see
    Source.labels); None when a source cannot tell without reading all its data."""
    labels = [source.labels() for source in sources_lib.open_sources(spec)]
    if any(label is None for label in labels):
        return None
    return np.concatenate(labels) if labels else np.zeros(0, np.int64)


def class_names(spec: str) -> list[str] | None:
    """Class names (folder:, TFDS ClassLabel) or zero-shot prompts (demo:); None otherwise."""
    sources = sources_lib.open_sources(spec)
    names = [source.class_names for source in sources]
    if len(names) == 1 or all(n == names[0] for n in names):
        return names[0]
    return None
