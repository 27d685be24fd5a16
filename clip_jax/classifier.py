"""A classification head on CLIP's image tower: the end-to-end fine-tuning of WiSE-FT
(Wortsman et al. 2022) and LP-FT (Kumar et al. 2022), trained by the one trainer with
`config.loss = "cross_entropy"`.

The head maps the L2-normalised image embedding to class logits, x @ kernel + bias
(kernel [embed_dim, classes], bias [classes]); it lives beside the model's parameters
as params["head"] in a training state, and as variables["head"] once read back.  It
starts either as the zero-shot classifier (the prompt-ensemble class embeddings times
the model's logit scale, bias 0: step 0 scores exactly as zero-shot classification does)
or, for LP-FT, as a logistic-regression probe fitted on the frozen features of the
training data.  Only the image tower and the head train; every other parameter is held
fixed (`frozen_patterns`).
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

HEAD = "head"
TRAINED = ("visual", HEAD)  # the top-level parameters a classification fine-tune trains


def frozen_patterns(params) -> tuple[str, ...]:
    """Regexes (optim.frozen) of every top-level parameter but the image tower and head:
    the text tower, temperature and bias get no update and no weight decay."""
    return tuple(f"^{name}(/|$)" for name in params if name not in TRAINED)


def abstract_head(embed_dim: int, num_classes: int) -> dict:
    return {"kernel": jax.ShapeDtypeStruct((embed_dim, num_classes), jnp.float32),
            "bias": jax.ShapeDtypeStruct((num_classes,), jnp.float32)}


def zeroshot_head(model, variables, class_names: Sequence, templates: Sequence[str], tokenizer=None) -> dict:
    """The zero-shot classifier as a head: kernel = exp(logit_scale) * the normalised
    prompt-ensemble class embeddings, bias 0 (as WiSE-FT initialises its head)."""
    from clip_jax.evaluation.zeroshot import classifier_weights

    weights = classifier_weights(model, model_variables(variables), class_names, templates, tokenizer=tokenizer)
    scale = jnp.exp(jnp.asarray(variables["params"]["logit_scale"], jnp.float32))
    kernel = scale * jnp.asarray(weights, jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((kernel.shape[1],), jnp.float32)}


def probe_head(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> dict:
    """LP-FT's first stage: a logistic-regression probe on normalised image features,
    its L2 penalty chosen on a held-out fifth (clip_jax.evaluation.linear_probe)."""
    from clip_jax.evaluation import linear_probe

    x = np.asarray(normalise(features), np.float32)
    labels = np.asarray(labels, np.int32)
    fit_idx, val_idx = linear_probe.split_validation(labels, seed=seed)
    lam, _ = linear_probe.search_lambda(x[fit_idx], labels[fit_idx], x[val_idx], labels[val_idx], num_classes)[:2]
    kernel, bias, _, _ = linear_probe.fit(x, labels, lam, num_classes=num_classes)
    logging.info("LP-FT probe on %d examples: lambda %.3g", len(labels), lam)
    return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


def normalise(x):
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def logits(image_embeddings, head: Mapping) -> jax.Array:
    """Class logits of (unnormalised) image embeddings [N, E]."""
    return normalise(image_embeddings) @ head["kernel"] + head["bias"]


def model_variables(variables: Mapping) -> dict:
    """The model's own variables: without the head, wherever it is kept."""
    out = {k: v for k, v in variables.items() if k != HEAD}
    if HEAD in out.get("params", {}):
        out["params"] = {k: v for k, v in out["params"].items() if k != HEAD}
    return out


def split_head(variables: Mapping) -> dict:
    """{"params": ...without the head, ..., "head": head} for variables whose params
    hold one (a classification fine-tune's); others unchanged."""
    head = variables.get("params", {}).get(HEAD)
    if head is None:
        return dict(variables)
    return {**model_variables(variables), HEAD: head}


def check_head(head: Mapping, num_classes: int, where: str) -> None:
    classes = head["kernel"].shape[1]
    if classes != num_classes:
        raise ValueError(f"{where}: the checkpoint's classification head has {classes} classes, the evaluation "
                         f"{num_classes}; evaluate on the classes it was fine-tuned on")


def cross_entropy(logits_, labels, label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
    """Mean cross-entropy with labels smoothed towards uniform, and top-1 accuracy."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits_.shape[-1]), label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits_.astype(jnp.float32), targets))
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits_, axis=-1) == labels)}
