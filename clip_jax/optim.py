"""AdamW with CLIP's parameter groups and schedule.

* Decoupled weight decay (AdamW semantics: decay is multiplied by the learning rate),
  applied to every weight except gains, biases, embeddings and the temperature; the
  groups are regexes over '/'-joined parameter paths, first match wins.
* Linear warm-up to the peak, then cosine decay to `end_lr_factor * peak`.
* Global-norm gradient clipping (0 disables it).
* Frozen groups (regexes) get no update and no optimizer state (LiT-style locking).
  Transformer blocks are stacked along a leading layer axis (nn.scan), so freezing
  some blocks of a tower uses "REGEX@START:STOP": layers START..STOP-1 of the matching
  stacked leaves get no update (their leaves keep optimizer state, being partly
  trained).  E.g. all of the image tower but its last 2 of 12 blocks:
  ("^visual/(?!transformer/blocks/)", "^visual/transformer/blocks/@:10").
* Layer-wise lr decay (`layer_decay` < 1, as BEiT and ELECTRA fine-tune): in each tower
  with stacked blocks, block l of L updates at lr * decay^(L - l), the embeddings before
  the blocks at decay^(L + 1), what follows the blocks (final norm, projection, a head)
  at the full lr.  Towers without stacked blocks (ResNets) are left at the full lr.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import ml_collections
import optax

from clip_jax.sharding import path_string

# Paths of parameters that are not "weights" in the paper's sense.
NO_DECAY = (
    r"(^|/)bias$",
    r"(^|/)scale$",  # LayerNorm and BatchNorm gains
    r"embedding",  # token, positional and class embeddings
    r"(^|/)probe$",  # SigLIP's attention-pooling query, a learned embedding too
    r"^logit_scale$",
    r"^logit_bias$",
)


def schedule(peak_lr: float, total_steps: int, warmup_steps: int, end_lr_factor: float = 0.0):
    warmup_steps = min(warmup_steps, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=peak_lr * end_lr_factor,
    )


def _label_tree(params, patterns: Sequence[str]):
    compiled = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(r.search(path_string(path)) for r in compiled), params
    )


def decay_mask(params, no_decay: Sequence[str] = NO_DECAY):
    """True for leaves that get weight decay."""
    return jax.tree.map(lambda excluded: not excluded, _label_tree(params, no_decay))


def make_optimizer(config: ml_collections.ConfigDict, params, total_steps: int):
    """The optax transformation described in the module docstring.

    config: the training config's `optim` section (clip_jax.train_config, where each key's
    default is): lr, wd, b1, b2, eps, warmup_steps, end_lr_factor, grad_clip, no_decay
    (regexes of parameters without weight decay), frozen (regexes of parameters not trained),
    layer_decay (layer-wise lr decay; 1.0 is none).
    """
    lr = schedule(config.lr, total_steps, config.warmup_steps, config.end_lr_factor)
    no_decay = tuple(config.no_decay)
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    parts.append(optax.adamw(lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.wd,
                             mask=lambda p: decay_mask(p, no_decay)))
    layer_decay = config.get("layer_decay", 1.0)
    if layer_decay < 1.0:  # after AdamW: scales the step and the decoupled decay alike
        parts.append(_scale_by_layer(layer_decay))
    frozen = tuple(config.frozen)
    whole = tuple(p for p in frozen if "@" not in p)
    layered = tuple(_parse_layered(p) for p in frozen if "@" in p)
    if layered:
        parts.append(_freeze_layers(layered))
    trainable = optax.chain(*parts)
    if not whole:
        return trainable, lr
    labels = jax.tree.map(lambda f: "frozen" if f else "trainable", _label_tree(params, whole))
    return optax.multi_transform({"trainable": trainable, "frozen": optax.set_to_zero()}, labels), lr


BLOCKS = re.compile(r"^(?P<tower>[^/]+)/transformer/blocks/")
BEFORE_BLOCKS = re.compile(r"^[^/]+/(conv1|class_embedding|positional_embedding|token_embedding|ln_pre)(/|$)")


def layer_scales(params, decay: float):
    """The lr factor of every leaf (an array over the layer axis for stacked blocks)."""
    depth = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        match = BLOCKS.match(path_string(path))
        if match:
            depth[match["tower"]] = leaf.shape[0]

    def scale(path, leaf):
        name = path_string(path)
        tower = name.split("/", 1)[0]
        if tower not in depth:
            return 1.0
        layers = depth[tower]
        if BLOCKS.match(name):
            return decay ** (layers - jax.numpy.arange(layers, dtype=jax.numpy.float32))
        if BEFORE_BLOCKS.match(name):
            return decay ** (layers + 1)
        return 1.0

    return jax.tree_util.tree_map_with_path(scale, params)


def _scale_by_layer(decay: float):
    def update(updates, state, params=None):
        scales = layer_scales(updates, decay)

        def apply(u, s):
            s = jax.numpy.asarray(s, u.dtype)
            return u * s.reshape(s.shape + (1,) * (u.ndim - s.ndim))

        return jax.tree.map(apply, updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _parse_layered(pattern: str) -> tuple[re.Pattern, slice]:
    regex, _, layers = pattern.rpartition("@")
    try:
        start, stop = (int(x) if x else None for x in layers.split(":"))
    except ValueError:
        raise ValueError(f"frozen pattern {pattern!r}: expected REGEX@START:STOP, e.g. "
                         "'^visual/transformer/blocks/@:10'") from None
    return re.compile(regex), slice(start, stop)


def _freeze_layers(layered):
    """Zero the updates of the listed layers of stacked (scanned) block parameters."""

    def mask(path, update):
        name = path_string(path)
        for regex, layers in layered:
            if regex.search(name):
                keep = jax.numpy.ones(update.shape[0], update.dtype).at[layers].set(0)
                update = update * keep.reshape((-1,) + (1,) * (update.ndim - 1))
        return update

    return optax.stateless(lambda updates, params=None: jax.tree_util.tree_map_with_path(mask, updates))
