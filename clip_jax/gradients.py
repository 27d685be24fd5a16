"""Loss and gradients of one global batch, plain or by embedding-cache accumulation.

Plain: one forward and backward pass over the whole batch.

Accumulated (k micro-batches, as open_clip's accum-freq and GradCache): every example
still sees all k*B negatives, but only one micro-batch's activations are alive at a time.
  1. embed every micro-batch without gradients (only the embeddings are kept);
  2. compute the contrastive loss on all embeddings and its gradient with respect to
     the embeddings (and the temperature/bias);
  3. re-run each micro-batch with gradients and pull its slice of that embedding
     gradient back through the towers (a VJP), summing parameter gradients.
For towers without batch statistics this is the plain gradient exactly (up to float
summation order).  ResNets' BatchNorm sees micro-batch statistics, as in open_clip.

Classification (loss "cross_entropy", clip_jax.classifier): the image tower and a head
against labels; a per-example loss, so k micro-batches simply average their gradients.

What is differentiated (`Trainable`): every parameter; or, with LoRA adapters
(clip_jax.lora), only the adapters (and a classification head): the model runs on the
base weights with the adapters' low-rank products added, and the frozen weights get
zero gradients without their weight gradients ever being computed.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from clip_jax import classifier, lora, losses, window_resize
from clip_jax.preprocess import normalize_images, normalize_values
from clip_jax.sharding import BATCH_AXES


@dataclasses.dataclass(frozen=True)
class Trainable:
    """Which parameters are differentiated, and the parameters the model runs on."""

    adapter_scale: float | None = None  # LoRA: alpha / rank; None: every parameter

    def split(self, params) -> tuple[dict, dict]:
        """(differentiated, held fixed)."""
        if self.adapter_scale is None:
            return params, {}
        trained = {k: params[k] for k in (lora.ADAPTERS, classifier.HEAD) if k in params}
        return trained, {k: v for k, v in params.items() if k not in trained}

    def join(self, trained, fixed) -> dict:
        """The parameters the model (and a head) run on."""
        if self.adapter_scale is None:
            return trained
        params = lora.merge(fixed, trained[lora.ADAPTERS], self.adapter_scale)
        if classifier.HEAD in trained:
            params[classifier.HEAD] = trained[classifier.HEAD]
        return params

    def expand(self, grads, params) -> dict:
        """Gradients for every parameter: zeros where held fixed (never computed)."""
        if self.adapter_scale is None:
            return grads
        return {k: grads[k] if k in grads else jax.tree.map(jnp.zeros_like, v) for k, v in params.items()}


def _split(tree, steps: int, mesh):
    """[N, ...] -> [k, N/k, ...] with micro-batch j = examples j, j+k, j+2k, ...: each
    device's contiguous slice holds an equal share of every micro-batch, so the split
    moves no data between devices."""

    def split(x):
        x = x.reshape((x.shape[0] // steps, steps) + x.shape[1:]).swapaxes(0, 1)
        spec = P(None, BATCH_AXES, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(split, tree)


def _merge(x):
    """Inverse of `_split` for one array: [k, N/k, ...] -> [N, ...] in batch order."""
    return x.swapaxes(0, 1).reshape((-1,) + x.shape[2:])


def _images(model, batch):
    """The model's input images of a (micro-)batch: the pipeline's float32 images, its
    uint8 pixels normalised here, or its crop windows (train_transform "device") resized
    and normalised here; per micro-batch, so only one micro-batch's pixels are alive."""
    family = model.config.family
    if "canvas" in batch:
        pixels = window_resize.crops(batch["canvas"], batch["boxes"], batch["valid"], model.config.vision.image_size)
        return normalize_values(pixels, model.dtype, family)
    images = batch["images"]
    if images.dtype == jnp.uint8:
        images = normalize_images(images, model.dtype, family)
    return images


def _embed(model, params, batch_stats, batch, rng):
    """Normalised (image, text) embeddings of a batch in training mode, and the updated
    BatchNorm statistics (ResNets)."""
    is_resnet = model.config.vision.is_resnet
    variables = {"params": params, **({"batch_stats": batch_stats} if is_resnet else {})}
    (image, text, _), updates = model.apply(
        variables, _images(model, batch), batch["tokens"], train=True,
        mutable=["batch_stats"] if is_resnet else [], rngs={"patch_dropout": rng},
    )
    return (losses.l2_normalize(image), losses.l2_normalize(text)), updates.get("batch_stats", batch_stats)


def _temperature(params) -> dict:
    return {k: params[k] for k in ("logit_scale", "logit_bias") if k in params}


def _caption_keys(loss_fn, batch):
    return losses.caption_keys(batch["tokens"]) if loss_fn.uses_caption_keys else None


def _loss(loss_fn, mesh, image, text, temperature, keys=None):
    scale = jnp.exp(temperature["logit_scale"].astype(jnp.float32))
    return loss_fn(image, text, scale, bias=temperature.get("logit_bias"), mesh=mesh, keys=keys)


def plain_grads(model, loss_fn, mesh, view, params, batch_stats, batch, rng):
    """One forward and backward pass over the whole batch."""
    keys = _caption_keys(loss_fn, batch)
    trained, fixed = view.split(params)

    def total(t):
        p = view.join(t, fixed)
        (image, text), new_stats = _embed(model, p, batch_stats, batch, rng)
        loss, metrics = _loss(loss_fn, mesh, image, text, _temperature(p), keys)
        return loss, (metrics, new_stats)

    (loss, (metrics, new_stats)), grads = jax.value_and_grad(total, has_aux=True)(trained)
    return loss, metrics, new_stats, view.expand(grads, params)


def accumulated_grads(model, loss_fn, mesh, view, steps, params, batch_stats, batch, rng):
    """The same loss and gradients through `steps` micro-batches (module docstring)."""
    micro = _split(batch, steps, mesh)
    rngs = jax.random.split(rng, steps)  # the same patch masks in both passes
    trained, fixed = view.split(params)
    effective = jax.lax.stop_gradient(view.join(trained, fixed))

    def embed_only(_, inputs):
        mb, key = inputs
        (image, text), _ = _embed(model, effective, batch_stats, mb, key)
        return None, (image, text)

    _, (images, texts) = jax.lax.scan(embed_only, None, (micro, rngs))
    (loss, metrics), (image_grad, text_grad, temperature_grad) = jax.value_and_grad(
        functools.partial(_loss, loss_fn, mesh, keys=_caption_keys(loss_fn, batch)), argnums=(0, 1, 2), has_aux=True,
    )(_merge(images), _merge(texts), _temperature(effective))
    cotangents = _split((image_grad, text_grad), steps, mesh)

    def backward(carry, inputs):
        grads, _ = carry
        mb, key, cotangent = inputs
        (_, vjp, new_stats) = jax.vjp(lambda t: _embed(model, view.join(t, fixed), batch_stats, mb, key), trained,
                                      has_aux=True)
        (micro_grads,) = vjp(cotangent)
        return (jax.tree.map(jnp.add, grads, micro_grads), new_stats), None

    zeros = jax.tree.map(jnp.zeros_like, trained)
    (grads, new_stats), _ = jax.lax.scan(backward, (zeros, batch_stats), (micro, rngs, cotangents))
    grads = dict(grads)
    for key, value in temperature_grad.items():
        if key in grads:  # the temperature, unless held fixed
            grads[key] = grads[key] + value
    return loss, metrics, new_stats, view.expand(grads, params)


def classification_grads(model, mesh, view, steps, label_smoothing, params, batch_stats, batch, rng):
    """Cross-entropy of the head's logits on the image tower (clip_jax.classifier): per
    example, so `steps` micro-batches are plain gradient accumulation (their mean)."""
    trained, fixed = view.split(params)

    def micro_loss(t, stats, mb, key):
        p = view.join(t, fixed)
        is_resnet = model.config.vision.is_resnet
        variables = {"params": classifier.model_variables({"params": p})["params"],
                     **({"batch_stats": stats} if is_resnet else {})}
        image, updates = model.apply(variables, _images(model, mb), train=True, method=model.encode_image,
                                     mutable=["batch_stats"] if is_resnet else [], rngs={"patch_dropout": key})
        loss, metrics = classifier.cross_entropy(classifier.logits(image, p[classifier.HEAD]), mb["labels"],
                                                 label_smoothing)
        return loss, (metrics, updates.get("batch_stats", stats))

    grad = jax.value_and_grad(micro_loss, has_aux=True)
    if steps == 1:
        (loss, (metrics, new_stats)), grads = grad(trained, batch_stats, batch, rng)
        return loss, metrics, new_stats, view.expand(grads, params)

    def body(carry, inputs):
        total, total_metrics, stats, grads = carry
        mb, key = inputs
        (loss, (metrics, stats)), micro_grads = grad(trained, stats, mb, key)
        return (total + loss / steps, jax.tree.map(lambda a, b: a + b / steps, total_metrics, metrics), stats,
                jax.tree.map(lambda a, b: a + b / steps, grads, micro_grads)), None

    zeros = (jnp.zeros((), jnp.float32), {"accuracy": jnp.zeros((), jnp.float32)}, batch_stats,
             jax.tree.map(jnp.zeros_like, trained))
    (loss, metrics, new_stats, grads), _ = jax.lax.scan(body, zeros, (_split(batch, steps, mesh),
                                                                       jax.random.split(rng, steps)))
    return loss, metrics, new_stats, view.expand(grads, params)


def make_grad_fn(model, loss_name: str, mesh, accumulation_steps: int = 1, label_smoothing: float = 0.0,
                 adapter_scale: float | None = None) -> Callable:
    """fn(params, batch_stats, batch, rng) -> (loss, metrics, batch_stats, grads).
    adapter_scale: LoRA's alpha / rank when params hold adapters (only they are trained)."""
    loss_fn = losses.loss_spec(loss_name)
    view = Trainable(adapter_scale)
    if loss_fn.classification:
        return functools.partial(classification_grads, model, mesh, view, accumulation_steps, label_smoothing)
    if accumulation_steps == 1:
        return functools.partial(plain_grads, model, loss_fn, mesh, view)
    return functools.partial(accumulated_grads, model, loss_fn, mesh, view, accumulation_steps)
