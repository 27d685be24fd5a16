"""Contrastive losses.

`softmax_loss_dense` is the paper's loss on one device: the symmetric cross-entropy
over the full N x N logits.  `softmax_loss_gathered` is what the trainer uses on a
mesh: inside `shard_map`, each device gathers the other modality's embeddings from all
devices and computes only its own rows (image->text) and its own columns (text->image),
so per-device memory is local_batch x global_batch, never global_batch squared.
Gradients flow back through the all-gather (its transpose is a reduce-scatter).
Both return (loss, metrics) with in-batch accuracies, and agree to float precision.
`LOSSES` maps `config.loss` names to these functions.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from clip_jax.sharding import BATCH_AXES


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / ||x|| along the last axis, in float32 (OpenAI divides by the norm, no epsilon;
    a tiny floor only guards an all-zero row)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def _cross_entropy_sum(logits: jax.Array, labels: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def _correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.sum(jnp.argmax(logits, axis=-1) == labels)


def softmax_loss_dense(image: jax.Array, text: jax.Array, scale: jax.Array):
    """Symmetric InfoNCE over the full batch. image, text: normalised [N, E]; scale = exp(t)."""
    logits = scale * image @ text.T
    labels = jnp.arange(image.shape[0])
    n = image.shape[0]
    loss_i2t = _cross_entropy_sum(logits, labels) / n
    loss_t2i = _cross_entropy_sum(logits.T, labels) / n
    metrics = {
        "i2t_accuracy": _correct(logits, labels) / n,
        "t2i_accuracy": _correct(logits.T, labels) / n,
    }
    return 0.5 * (loss_i2t + loss_t2i), metrics


def softmax_loss_gathered(image: jax.Array, text: jax.Array, scale: jax.Array, mesh: Mesh,
                          axes: Sequence[str] = BATCH_AXES):
    """The same loss with local rows against gathered embeddings; image and text are
    global arrays whose batch is split over `axes` of `mesh`."""
    axes = tuple(axes)

    def local(image_local, text_local, scale_):
        rows = image_local.shape[0]
        all_image = jax.lax.all_gather(image_local, axes, tiled=True)
        all_text = jax.lax.all_gather(text_local, axes, tiled=True)
        total = all_image.shape[0]
        labels = jax.lax.axis_index(axes) * rows + jnp.arange(rows)
        logits_i2t = scale_ * image_local @ all_text.T  # my images against every text
        logits_t2i = scale_ * text_local @ all_image.T  # my texts against every image
        loss = _cross_entropy_sum(logits_i2t, labels) + _cross_entropy_sum(logits_t2i, labels)
        loss = jax.lax.psum(loss, axes) / (2 * total)
        metrics = {
            "i2t_accuracy": jax.lax.psum(_correct(logits_i2t, labels), axes) / total,
            "t2i_accuracy": jax.lax.psum(_correct(logits_t2i, labels), axes) / total,
        }
        return loss, metrics

    batch = P(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P()), out_specs=(P(), P()))(
        image, text, scale
    )


def softmax_loss_global(image: jax.Array, text: jax.Array, scale: jax.Array, mesh: Mesh):
    """The plain global-logits form on a mesh (what big_vision does): XLA partitions the
    full N x N logits, so per-device memory grows with the square of the global batch.
    Kept as the reference for tests and the memory benchmark, not for training at scale."""
    del mesh
    return softmax_loss_dense(image, text, scale)


# config.loss -> fn(image, text, scale, mesh) -> (loss, metrics); embeddings normalised.
LOSSES = {
    "softmax": softmax_loss_gathered,
    "softmax_global": softmax_loss_global,
}
