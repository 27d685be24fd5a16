"""Contrastive losses, selected by name from one table (`LOSSES`, `config.loss`).

Each takes L2-normalised image and text embeddings [N, E] (global arrays split over the
batch axes of a mesh) and the scale exp(t) (plus the bias for the sigmoid losses) and
returns (loss, metrics) with in-batch accuracies.  A `LossSpec` says how to call one and
the scoring rule of the model it trains (clip_jax.models.scoring).

* `softmax` (the paper's symmetric InfoNCE): inside `shard_map` each device gathers the
  other modality's embeddings and computes only its own rows (image->text) and columns
  (text->image): per-device memory local_batch x global_batch, never global_batch^2.
  Gradients flow back through the all-gather (its transpose is a reduce-scatter).
* `softmax_ring`: the same loss with the embeddings passed around the device ring by
  `ppermute` and an online logsumexp, one local_batch x local_batch block at a time;
  each ring step is rematerialised, so the backward pass also holds one block.
* `sigmoid` (SigLIP): every pair is an independent binary problem, positives on the
  diagonal; computed on the ring the same way.
* `flyp` (FLYP, Goyal et al. 2023: fine-tune on class-prompt captions with the
  pretraining loss): `softmax` where two examples whose captions are identical token for
  token are not each other's negatives.  A fine-tuning batch holds many images of one
  class, and with few templates many of them share a caption; as negatives, such a pair
  would ask the model to rank one text embedding both above and below itself (the loss
  could not fall below log 2 per duplicate).  The same class under another template stays
  a negative, as in FLYP.  Captions are compared by two 32-bit hashes of their tokens
  (`caption_keys`).
* `cross_entropy`: not contrastive: class logits of a head on the image tower
  (clip_jax.classifier) against the batch's labels, for fine-tuning on labelled data.
* `softmax_global` / `sigmoid_dense` / `flyp_dense`: the plain N x N forms, the references the others
  are tested against (and the memory benchmark's baseline).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from clip_jax.models.scoring import scoring_rule
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


# Two fixed odd multipliers per token position (up to 1,024 positions): a caption's keys
# are its tokens' weighted sums, modulo 2^32.
_KEY_WEIGHTS = np.random.RandomState(0x464C5950).randint(0, 2**32, (2, 1024), dtype=np.uint64).astype(np.uint32) | 1


def caption_keys(tokens: jax.Array) -> jax.Array:
    """[N, 2] uint32 keys of token rows [N, L]: equal rows have equal keys; two different
    rows share both keys with probability about 2^-64."""
    length = tokens.shape[-1]
    if length > _KEY_WEIGHTS.shape[1]:
        raise ValueError(f"captions of {length} tokens: caption_keys handles up to {_KEY_WEIGHTS.shape[1]}")
    return tokens.astype(jnp.uint32) @ jnp.asarray(_KEY_WEIGHTS[:, :length].T)


def _duplicates(keys_rows: jax.Array, keys_columns: jax.Array, labels: jax.Array) -> jax.Array:
    """[rows, columns] True where a column's caption equals the row's and it is not the
    row's own pair: the entries the `flyp` loss leaves out."""
    same = jnp.all(keys_rows[:, None, :] == keys_columns[None, :, :], axis=-1)
    return same & (jnp.arange(keys_columns.shape[0])[None, :] != labels[:, None])


def _without(logits: jax.Array, excluded: jax.Array | None) -> jax.Array:
    return logits if excluded is None else jnp.where(excluded, -jnp.inf, logits)


def softmax_loss_dense(image: jax.Array, text: jax.Array, scale: jax.Array, keys: jax.Array | None = None):
    """Symmetric InfoNCE over the full batch. image, text: normalised [N, E]; scale = exp(t).
    keys (caption_keys of the captions): pairs with identical captions are not negatives."""
    labels = jnp.arange(image.shape[0])
    excluded = None if keys is None else _duplicates(keys, keys, labels)
    logits = _without(scale * image @ text.T, excluded)
    n = image.shape[0]
    loss_i2t = _cross_entropy_sum(logits, labels) / n
    loss_t2i = _cross_entropy_sum(logits.T, labels) / n
    metrics = {
        "i2t_accuracy": _correct(logits, labels) / n,
        "t2i_accuracy": _correct(logits.T, labels) / n,
    }
    return 0.5 * (loss_i2t + loss_t2i), metrics


def softmax_loss_gathered(image: jax.Array, text: jax.Array, scale: jax.Array, mesh: Mesh,
                          axes: Sequence[str] = BATCH_AXES, keys: jax.Array | None = None):
    """The same loss with local rows against gathered embeddings; image and text are
    global arrays whose batch is split over `axes` of `mesh`.  keys: as softmax_loss_dense."""
    axes = tuple(axes)

    def local(image_local, text_local, scale_, keys_local):
        rows = image_local.shape[0]
        all_image = jax.lax.all_gather(image_local, axes, tiled=True)
        all_text = jax.lax.all_gather(text_local, axes, tiled=True)
        total = all_image.shape[0]
        labels = jax.lax.axis_index(axes) * rows + jnp.arange(rows)
        excluded = None
        if keys_local is not None:  # the same pairs are excluded in both directions
            excluded = _duplicates(keys_local, jax.lax.all_gather(keys_local, axes, tiled=True), labels)
        logits_i2t = _without(scale_ * image_local @ all_text.T, excluded)  # my images against every text
        logits_t2i = _without(scale_ * text_local @ all_image.T, excluded)  # my texts against every image
        loss = _cross_entropy_sum(logits_i2t, labels) + _cross_entropy_sum(logits_t2i, labels)
        loss = jax.lax.psum(loss, axes) / (2 * total)
        metrics = {
            "i2t_accuracy": jax.lax.psum(_correct(logits_i2t, labels), axes) / total,
            "t2i_accuracy": jax.lax.psum(_correct(logits_t2i, labels), axes) / total,
        }
        return loss, metrics

    batch = P(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P(), batch), out_specs=(P(), P()))(
        image, text, scale, keys
    )


def _ring_scan(step, carry, axes: tuple[str, ...], size: int):
    """Run `step(carry, visiting, source) -> carry` once per device block: the visiting
    (image, text) block moves one device along the ring after each step."""

    def body(state, _):
        carry, visiting, source = state
        carry = step(carry, visiting, source)
        visiting = jax.lax.ppermute(visiting, axes, [(i, (i + 1) % size) for i in range(size)])
        return (carry, visiting, (source - 1) % size), None

    me = jax.lax.axis_index(axes)
    # The accumulators start equal on every device but diverge: declare them varying.
    accumulators = jax.tree.map(lambda x: jax.lax.pcast(x, axes, to="varying"), carry[0])
    state = (accumulators, carry[1], me)
    (carry, _, _), _ = jax.lax.scan(jax.checkpoint(body), state, None, length=size)
    return carry


def _axis_size(mesh: Mesh, axes: Sequence[str]) -> int:
    size = 1
    for axis in axes:
        size *= mesh.shape[axis]
    return size


def _running_best(logits: jax.Array, source: jax.Array, best: jax.Array, best_index: jax.Array):
    """Fold one ring block of logits [rows, rows] (candidates of device `source`) into
    each row's best score and its global candidate index so far (the in-batch accuracy:
    ties keep the earlier block, as argmax keeps the first maximum)."""
    rows = logits.shape[1]
    block_best = jnp.max(logits, axis=1)
    block_index = source * rows + jnp.argmax(logits, axis=1).astype(jnp.int32)
    better = block_best > best
    return jnp.where(better, block_best, best), jnp.where(better, block_index, best_index)


def softmax_loss_ring(image: jax.Array, text: jax.Array, scale: jax.Array, mesh: Mesh,
                      axes: Sequence[str] = BATCH_AXES):
    """The symmetric InfoNCE loss, one local x local block per ring step."""
    axes = tuple(axes)
    size = _axis_size(mesh, axes)

    def local(image_local, text_local, scale_):
        rows = image_local.shape[0]
        me = jax.lax.axis_index(axes)
        neg_inf = jnp.full((rows,), -jnp.inf, jnp.float32)
        zeros = jnp.zeros((rows,), jnp.float32)
        first = jnp.zeros((rows,), jnp.int32)
        # per direction: running logsumexp, positive logit, best logit, its global index
        init = ((neg_inf, zeros, neg_inf, first), (neg_inf, zeros, neg_inf, first))

        def step(carry, visiting, source):
            visiting_image, visiting_text = visiting
            updated = []
            for (lse, positive, best, best_index), mine, theirs in (
                (carry[0], image_local, visiting_text),
                (carry[1], text_local, visiting_image),
            ):
                logits = scale_ * mine @ theirs.T  # [rows, rows] block
                lse = jnp.logaddexp(lse, jax.nn.logsumexp(logits, axis=1))
                positive = jnp.where(source == me, jnp.diagonal(logits), positive)
                updated.append((lse, positive, *_running_best(logits, source, best, best_index)))
            return tuple(updated)

        carry = _ring_scan(step, (init, (image_local, text_local)), axes, size)
        labels = me * rows + jnp.arange(rows)
        total = rows * size
        loss = sum(jnp.sum(lse - positive) for lse, positive, _, _ in carry)
        loss = jax.lax.psum(loss, axes) / (2 * total)
        metrics = {
            name: jax.lax.psum(jnp.sum(direction[3] == labels), axes) / total
            for name, direction in zip(("i2t_accuracy", "t2i_accuracy"), carry)
        }
        return loss, metrics

    batch = P(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P()), out_specs=(P(), P()))(image, text, scale)


def sigmoid_loss_dense(image: jax.Array, text: jax.Array, scale: jax.Array, bias=0.0):
    """SigLIP: -sum over all pairs of log sigmoid(+-(scale * x.y + bias)), / N."""
    logits = scale * image @ text.T + bias
    n = image.shape[0]
    signs = 2.0 * jnp.eye(n) - 1.0
    loss = -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / n
    labels = jnp.arange(n)
    return loss, {"i2t_accuracy": _correct(logits, labels) / n, "t2i_accuracy": _correct(logits.T, labels) / n}


def sigmoid_loss_ring(image: jax.Array, text: jax.Array, scale: jax.Array, mesh: Mesh, bias=0.0,
                      axes: Sequence[str] = BATCH_AXES):
    """SigLIP's loss with text blocks passed around the ring: local x local memory."""
    axes = tuple(axes)
    size = _axis_size(mesh, axes)
    bias = jnp.asarray(0.0 if bias is None else bias, jnp.float32)

    def local(image_local, text_local, scale_, bias_):
        rows = image_local.shape[0]
        me = jax.lax.axis_index(axes)
        eye = jnp.eye(rows)

        def step(carry, visiting, source):
            loss, best_i, index_i, best_t, index_t = carry
            visiting_image, visiting_text = visiting
            logits = scale_ * image_local @ visiting_text.T + bias_
            signs = jnp.where(source == me, 2.0 * eye - 1.0, -1.0)
            loss = loss - jnp.sum(jax.nn.log_sigmoid(signs * logits))
            best_i, index_i = _running_best(logits, source, best_i, index_i)
            # Text->image accuracy (a metric only): the columns, without gradients.
            columns = jax.lax.stop_gradient(scale_ * text_local @ visiting_image.T)
            best_t, index_t = _running_best(columns, source, best_t, index_t)
            return loss, best_i, index_i, best_t, index_t

        neg_inf = jnp.full((rows,), -jnp.inf, jnp.float32)
        first = jnp.zeros((rows,), jnp.int32)
        init = (jnp.zeros((), jnp.float32), neg_inf, first, neg_inf, first)
        loss, _, index_i, _, index_t = _ring_scan(step, (init, (image_local, text_local)), axes, size)
        labels = me * rows + jnp.arange(rows)
        total = rows * size
        metrics = {
            "i2t_accuracy": jax.lax.psum(jnp.sum(index_i == labels), axes) / total,
            "t2i_accuracy": jax.lax.psum(jnp.sum(index_t == labels), axes) / total,
        }
        return jax.lax.psum(loss, axes) / total, metrics

    batch = P(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P(), P()), out_specs=(P(), P()))(
        image, text, scale, bias)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """One training loss: its function, how it is called, and the scoring rule of the
    models it trains (which sets their initial temperature and bias, and its cap)."""

    fn: Callable
    on_mesh: bool  # fn takes `mesh` (the shard_map forms)
    # The scoring rule a model trained with this loss has (clip_jax.models.scoring):
    # "softmax", or "sigmoid" (fn takes `bias`; the model gets a learnable logit bias).
    scoring: str
    # fn takes `keys` (caption_keys of the batch's tokens) and excludes duplicate captions.
    uses_caption_keys: bool = False
    # Not contrastive: a classification head on the image tower against the batch's
    # labels (clip_jax.classifier; fn is unused).
    classification: bool = False

    @property
    def sigmoid(self) -> bool:
        return scoring_rule(self.scoring).has_bias

    def __call__(self, image, text, scale, bias=None, mesh: Mesh | None = None, keys=None):
        options = {}
        if self.on_mesh:
            options["mesh"] = mesh
        if self.uses_caption_keys:
            options["keys"] = keys
        if self.sigmoid:
            options["bias"] = 0.0 if bias is None else bias
        return self.fn(image, text, scale, **options)


# config.loss -> its spec.  "softmax_global" and "sigmoid_dense" are the plain N x N forms
# (XLA partitions the full logits: per-device memory grows with the global batch squared),
# kept as references for tests and the memory benchmark, not for training at scale.
LOSSES = {
    "softmax": LossSpec(softmax_loss_gathered, on_mesh=True, scoring="softmax"),
    "softmax_ring": LossSpec(softmax_loss_ring, on_mesh=True, scoring="softmax"),
    "softmax_global": LossSpec(softmax_loss_dense, on_mesh=False, scoring="softmax"),
    "sigmoid": LossSpec(sigmoid_loss_ring, on_mesh=True, scoring="sigmoid"),
    "sigmoid_dense": LossSpec(sigmoid_loss_dense, on_mesh=False, scoring="sigmoid"),
    "flyp": LossSpec(softmax_loss_gathered, on_mesh=True, scoring="softmax", uses_caption_keys=True),
    "flyp_dense": LossSpec(softmax_loss_dense, on_mesh=False, scoring="softmax", uses_caption_keys=True),
    "cross_entropy": LossSpec(None, on_mesh=False, scoring="softmax", classification=True),
}


def loss_spec(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss {name!r} unknown; valid: {sorted(LOSSES)}") from None


def model_options(loss: str, logit_scale_init: float | None = None,
                  logit_bias_init: float | None = None) -> dict:
    """`create_model`'s scoring, logit_scale_init and logit_bias_init for training with
    `loss`: its scoring rule and that rule's initial temperature (OpenAI's 1/0.07 and no
    bias for softmax, SigLIP's 10 and -10 for sigmoid) unless given.  A bias given to a
    loss without one is an error."""
    spec = loss_spec(loss)
    rule = scoring_rule(spec.scoring)
    if logit_bias_init is not None and not rule.has_bias:
        sigmoid = ", ".join(name for name, s in LOSSES.items() if s.sigmoid)
        raise ValueError(f"logit_bias_init={logit_bias_init} is set, but loss {loss!r} has no logit bias; "
                         f"unset it, or use a sigmoid loss ({sigmoid})")
    scale = rule.logit_scale_init if logit_scale_init is None else logit_scale_init
    bias = (rule.logit_bias_init if logit_bias_init is None else logit_bias_init) if rule.has_bias else None
    return {"scoring": spec.scoring, "logit_scale_init": scale, "logit_bias_init": bias}
