"""A tiny training config and a deterministic in-memory data source for trainer tests."""
from __future__ import annotations

import ml_collections
import numpy as np

import clip_jax


class SyntheticIterator:
    """Deterministic image-text batches indexed by batch number; resumable; a host's
    slice of a global batch.

    Each example's caption token encodes its class, and its image is a noisy class
    template, so a model can learn the pairing and the loss falls.
    """

    def __init__(self, batch_size, image_size, seed=0, process_index=0, process_count=1, classes=8):
        self.batch_size, self.image_size = batch_size, image_size
        self.seed, self.process_index, self.process_count = seed, process_index, process_count
        rs = np.random.RandomState(1234)
        self.templates = rs.randn(classes, image_size, image_size, 3).astype(np.float32)
        self.tokens = clip_jax.tokenize([f"class number {c}" for c in range(classes)])
        self.position = 0
        self.poison_at = None  # batch number whose images become NaN

    def __iter__(self):
        return self

    def __next__(self):
        # The global batch depends only on (seed, position); each host takes its slice,
        # so any process/device layout trains on the same examples.
        rs = np.random.RandomState([self.seed, self.position])
        total = self.batch_size * self.process_count
        labels = rs.randint(0, len(self.templates), total)
        noise = rs.randn(total, self.image_size, self.image_size, 3)
        mine = slice(self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size)
        labels, noise = labels[mine], noise[mine]
        images = self.templates[labels] + 0.3 * noise
        if self.poison_at == self.position:
            images[:] = np.nan
        self.position += 1
        return {"images": images.astype(np.float32), "tokens": self.tokens[labels]}

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])

    def stats(self):
        return {"batches": self.position}


def synthetic_data(setup, seed):
    import jax

    return SyntheticIterator(setup.local_batch_size, setup.model.config.vision.image_size, seed,
                             jax.process_index(), jax.process_count())


def tiny_config(**overrides) -> ml_collections.ConfigDict:

    from clip_jax.train_config import base_config

    config = base_config()
    config.model = "tiny-vit"
    config.compute_dtype = "float32"
    config.batch_size = 16
    config.total_steps = 6
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 2
    config.log_every = 2
    config.checkpoint_every = 3
    config.async_checkpoints = False
    config.mesh = (("data", -1), ("fsdp", 1))
    return override(config, **overrides)


def override(config, **overrides):
    """`config` with dotted keys set: override(config, **{"optim.lr": 1e-3})."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def embeddings(n=64, e=16, seed=0):
    rs = np.random.RandomState(seed)
    image = rs.randn(n, e).astype(np.float32)
    text = (image + 0.8 * rs.randn(n, e)).astype(np.float32)  # correlated, so accuracies are not trivial
    return image, text
