"""Features of a whole evaluation dataset: sharded over devices and hosts, cached on disk.

`extract` runs the image encoder (and optionally the text encoder on every caption) over
`data.eval_batches` output.  Every host yields the same number of batches (padding rows
have mask False), so the collective calls below stay in step.  Host h holds examples
h, h + P, h + 2P, ...; after `process_allgather` the rows are interleaved back into
dataset order and padding rows dropped, so every host ends with identical arrays.
With texts (retrieval) each distinct caption is encoded once per host, and an image equal
to an earlier one (the same decoded pixels) takes that one's features: equal inputs get
bitwise-equal features, which retrieval's tie rule relies on (clip_jax.evaluation.retrieval),
however the encoder's rounding depends on a row's place in its batch.

`cached` stores the result as .npz under a key built from the checkpoint's identity,
the dataset spec, image size and feature kind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Iterable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clip_jax import tokenizers
from clip_jax.inference import encode_image, encode_text
from clip_jax.models import family_of

CACHE_VERSION = 1


@dataclasses.dataclass
class Features:
    """Per-example features in dataset order (padding removed)."""
    images: np.ndarray                     # [N, D] float32, unnormalised
    labels: np.ndarray                     # [N] int32, -1 where absent
    texts: np.ndarray | None = None        # [N, C, E] float32 caption features (C = most captions)
    text_mask: np.ndarray | None = None    # [N, C] bool, which caption slots are real

    def arrays(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    extra = -len(x) % multiple
    return np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)]) if extra else x


def _batch_sharding() -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))


def _encode(fn, model, variables, x: np.ndarray, *args) -> np.ndarray:
    """Runs one jitted encoder call with the rows split over every device (of every host).

    Rows are padded to a multiple of the local device count; with several hosts each host's
    rows become its part of one global array, as the trainer's batches do."""
    n = len(x)
    local = jax.local_device_count()
    x = _pad_rows(x, local)
    sharding = _batch_sharding()
    if jax.process_count() == 1:
        out = fn(model, variables, jax.device_put(x, sharding), *args)
        return np.asarray(out)[:n]
    mesh = sharding.mesh
    global_x = multihost_utils.host_local_array_to_global_array(x, mesh, PartitionSpec("data"))
    out = fn(model, variables, global_x, *args)
    return np.asarray(multihost_utils.global_array_to_host_local_array(out, mesh, PartitionSpec("data")))[:n]


def _encode_captions(model, variables, captions: list[list[str]], chunk: int,
                     known: dict[str, np.ndarray], tokenize) -> tuple[np.ndarray, np.ndarray]:
    """[B, C, E] features and [B, C] mask of one batch's captions (C: most captions in it).

    `known` maps every caption encoded so far to its features: each distinct caption is
    encoded once, so equal captions get bitwise-equal features (exact ties, whatever batch
    or trimmed length they would have been encoded with) and boilerplate costs nothing."""
    most = max((len(c) for c in captions), default=0)
    flat = list(dict.fromkeys(text for texts in captions for text in texts if text not in known))
    embed = model.config.embed_dim
    out = np.zeros((len(captions), max(most, 1), embed), np.float32)
    mask = np.zeros((len(captions), max(most, 1)), bool)
    if jax.process_count() > 1:
        # Every host must make the same number of encoder calls.
        chunks = int(np.max(multihost_utils.process_allgather(np.int32(-(-len(flat) // chunk)))))
    else:
        chunks = -(-len(flat) // chunk)
    encoded = []
    for i in range(chunks):
        part = flat[i * chunk : (i + 1) * chunk]
        tokens = np.zeros((chunk, model.config.text.context_length), np.int32)
        if part:
            tokens[: len(part)] = tokenize(part)
        if jax.process_count() == 1:  # hosts would have to agree on the trimmed length
            tokens = family_of(model).trim_text(tokens)
        # A fixed chunk shape: one compilation however many captions a batch has.
        encoded.append(_encode(lambda m, v, t: encode_text(m, v, t), model, variables, tokens)[: len(part)])
    features = np.concatenate(encoded) if encoded else np.zeros((0, embed), np.float32)
    known.update(zip(flat, features))
    for i, texts in enumerate(captions):
        for j, text in enumerate(texts):
            out[i, j] = known[text]
        mask[i, : len(texts)] = True
    return out, mask


def _share_duplicate_images(pixels: np.ndarray, features: np.ndarray, mask: np.ndarray,
                            known: dict[bytes, np.ndarray]) -> np.ndarray:
    """The batch's features with each real row whose pixels were seen before given the
    first such row's features."""
    features = np.array(features)
    for row in np.nonzero(mask)[0]:
        key = hashlib.blake2b(pixels[row].tobytes(), digest_size=16).digest()
        features[row] = known.setdefault(key, features[row].copy())
    return features


def merge_hosts(gathered: np.ndarray) -> np.ndarray:
    """[P, n, ...] per-host rows -> [P * n, ...] in dataset order (host h had rows h, h+P, ...)."""
    return np.swapaxes(gathered, 0, 1).reshape((-1,) + gathered.shape[2:])


def _gather(local: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return local
    return merge_hosts(np.asarray(multihost_utils.process_allgather(local)))


def extract(model, variables, batches: Iterable[Mapping], *, project: bool = True, texts: bool = False,
            text_chunk: int = 256, tokenizer=None) -> Features:
    """Image features (pre-projection with project=False) of every real row, and with
    texts=True the text features of every caption, tokenised by `tokenizer` (see
    clip_jax.tokenizers.resolve; None: the model's own, CLIP's BPE)."""
    tokenize = tokenizers.resolve(model, tokenizer) if texts else None
    images, labels, masks, caption_feats, caption_masks = [], [], [], [], []
    known_captions: dict[str, np.ndarray] = {}
    known_images: dict[bytes, np.ndarray] = {}
    image_fn = lambda m, v, x: encode_image(m, v, x, project=project)  # noqa: E731
    for batch in batches:
        pixels = np.asarray(batch["images"], np.float32)
        images.append(_encode(image_fn, model, variables, pixels))
        labels.append(np.asarray(batch["labels"], np.int32))
        masks.append(np.asarray(batch["mask"], bool))
        if texts:
            images[-1] = _share_duplicate_images(pixels, images[-1], masks[-1], known_images)
            feats, mask = _encode_captions(model, variables, list(batch["captions"]), text_chunk, known_captions,
                                           tokenize)
            caption_feats.append(feats)
            caption_masks.append(mask & masks[-1][:, None])
    if not images:
        raise ValueError("the dataset yielded no batches")
    mask = _gather(np.concatenate(masks))
    result = Features(images=_gather(np.concatenate(images))[mask], labels=_gather(np.concatenate(labels))[mask])
    if texts:
        most = max(f.shape[1] for f in caption_feats)
        if jax.process_count() > 1:
            most = int(np.max(multihost_utils.process_allgather(np.int32(most))))
        pad = lambda a: np.pad(a, [(0, 0), (0, most - a.shape[1])] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
        result.texts = _gather(np.concatenate([pad(f) for f in caption_feats]))[mask]
        result.text_mask = _gather(np.concatenate([pad(m) for m in caption_masks]))[mask]
    return result


# -- cache ------------------------------------------------------------------------------


def checkpoint_fingerprint(path: str) -> str:
    """Identity of a checkpoint file or directory: its real path plus the size and mtime of
    every file in it (a new checkpoint in a training workdir changes it)."""
    path = os.path.realpath(path)
    parts = [path]
    if os.path.isdir(path):
        for root, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                stat = os.stat(os.path.join(root, name))
                parts.append(f"{os.path.relpath(os.path.join(root, name), path)}:{stat.st_size}:{stat.st_mtime_ns}")
    else:
        stat = os.stat(path)
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_key(**parts) -> str:
    parts["version"] = CACHE_VERSION
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cached(cache_dir: str | None, key: str, compute: Callable[[], Features]) -> Features:
    """compute(), or its earlier result from cache_dir/<key>.npz.

    Hosts decide together: unless every host has the file, all recompute (the extraction
    is collective, so one host skipping it would leave the others waiting)."""
    if not cache_dir:
        return compute()
    path = os.path.join(cache_dir, f"{key}.npz")
    have = os.path.exists(path)
    if jax.process_count() > 1:
        have = bool(np.all(multihost_utils.process_allgather(np.int32(have))))
    if have:
        with np.load(path) as stored:
            return Features(**{k: stored[k] for k in stored.files})
    result = compute()
    if jax.process_index() == 0 or not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **result.arrays())
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    return result
