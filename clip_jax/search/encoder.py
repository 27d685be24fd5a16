"""A CLIP model as the index uses it: normalised embeddings of images and texts, and the
model's fingerprint.

The fingerprint is the SHA-256 of the architecture (its JSON) followed by every variable
in sorted path order: path, shape and values as little-endian float32.  It identifies what
the model computes, not the file it came from: an OpenAI .pt file and its open_clip or
clip_jax export (same values) share a fingerprint; another checkpoint does not.

Images are encoded in batches of one fixed size (the last batch padded), so `encode_image`
compiles once; the batch is split over the local devices when there are several.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import clip_jax
from clip_jax import tokenizers
from clip_jax.evaluation.prompts import fill
from clip_jax.models.architecture import VisionConfig
from clip_jax.models.registry import name_of

TEXT_BATCH = 8  # texts are encoded in batches padded to a multiple of this: few compiled shapes


def architecture_json(config) -> str:
    """The architecture as fingerprinted: its JSON without `vision.tower` where `layers`
    implies it, as it was before the field existed, so an index keeps matching its model."""
    data = config.to_dict()
    if data["vision"]["tower"] == VisionConfig(layers=config.vision.layers, patch_size=None).tower:
        del data["vision"]["tower"]
    return json.dumps(data, sort_keys=True)


def fingerprint(config, variables) -> str:
    digest = hashlib.sha256(architecture_json(config).encode())
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        values = np.ascontiguousarray(np.asarray(leaf, dtype=np.float32)).astype("<f4", copy=False)
        digest.update(f"\n{jax.tree_util.keystr(path)}:{values.shape}\n".encode())
        digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def normalise(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _recorded(checkpoint: str) -> str:
    """How an index records its checkpoint: a local path made absolute; a hub or
    pretrained spec (hf-hub:ORG/NAME, NAME:TAG) as it is, which loads anywhere."""
    local = os.path.expanduser(checkpoint)
    return os.path.abspath(local) if os.path.exists(local) else checkpoint


class Encoder:
    """`model` and `variables` (from clip_jax.load_checkpoint) with the index's conventions."""

    def __init__(self, model, variables, checkpoint: str | None = None, batch_size: int = 64, tokenizer=None):
        self.model = model
        self.config = model.config
        self.checkpoint = _recorded(checkpoint) if checkpoint else None
        self.tokenize = tokenizers.for_checkpoint(self.config, self.checkpoint, tokenizer)
        self.family = self.config.family  # names the image preprocessing the model was trained with
        devices = jax.local_devices()
        self.batch_size = -(-batch_size // len(devices)) * len(devices)
        mesh = Mesh(np.array(devices), ("data",))
        self._batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        self.variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
        self._host_variables = variables

    @classmethod
    def from_checkpoint(cls, path: str, name: str | None = None, batch_size: int = 64, tokenizer=None) -> "Encoder":
        model, variables = clip_jax.load_checkpoint(os.path.expanduser(path), name=name or None)
        return cls(model, variables, checkpoint=os.path.expanduser(path), batch_size=batch_size, tokenizer=tokenizer)

    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.config, self._host_variables)

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def identity(self) -> dict:
        """What the index's manifest records about the model."""
        return {"fingerprint": self.fingerprint, "architecture": self.config.to_dict(),
                "name": name_of(self.config), "checkpoint": self.checkpoint}

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """[n <= batch_size, S, S, 3] model inputs -> [n, D] normalised float32 embeddings."""
        n = len(images)
        if n > self.batch_size:
            raise ValueError(f"{n} images in one batch; the encoder's batch size is {self.batch_size}")
        padded = np.zeros((self.batch_size,) + images.shape[1:], np.float32)
        padded[:n] = images
        features = clip_jax.encode_image(self.model, self.variables, jax.device_put(padded, self._batch_sharding))
        return normalise(np.asarray(features)[:n])

    def encode_texts(self, texts: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """[len(texts), D] normalised text embeddings.  With templates, each text's embedding is
        the prompt ensemble: every template filled with it, normalised, averaged, renormalised."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        prompts = [fill(t, text) for text in texts for t in templates] if templates else texts
        tokens = np.asarray(self.tokenize(prompts))
        rows = -(-len(tokens) // TEXT_BATCH) * TEXT_BATCH
        padded = np.zeros((rows, tokens.shape[1]), tokens.dtype)
        padded[: len(tokens)] = tokens
        features = normalise(np.asarray(clip_jax.encode_text(self.model, self.variables, padded))[: len(tokens)])
        if templates:
            features = normalise(features.reshape(len(texts), len(templates), -1).mean(axis=1))
        return features

    def describe(self) -> str:
        return describe(self.identity())


def describe(identity: dict) -> str:
    """'ViT-B/32 (fingerprint 1a2b3c4d5e6f, from /path/model.pt)' for error messages."""
    name = identity.get("name") or f"a custom {identity['architecture']['embed_dim']}-d architecture"
    source = f", from {identity['checkpoint']}" if identity.get("checkpoint") else ""
    return f"{name} (fingerprint {identity['fingerprint'][:12]}{source})"
