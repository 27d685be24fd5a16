"""Zero-shot classification with prompt ensembling, as in the paper's notebook.

Each class's prompts (templates filled with its name) are encoded, L2-normalised,
averaged and renormalised: the ensemble lives in embedding space.  Images are scored
by cosine similarity against these class embeddings; top-1, top-5 and mean per-class
recall are reported.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from clip_jax.inference import encode_image, encode_text
from clip_jax.tokenizers.bpe import tokenize


def _normalise(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def check_templates(templates: Sequence[str]) -> None:
    if not templates:
        raise ValueError("no prompt templates given; e.g. ['a photo of a {}.']")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"prompt templates must contain '{{}}' where the class name goes; these do not: {bad[:5]}")


def classifier_weights(model, variables, class_names: Sequence[str], templates: Sequence[str],
                       batch_size: int = 256) -> jnp.ndarray:
    """[embed_dim, num_classes] ensembled, normalised class embeddings."""
    check_templates(templates)
    prompts = [t.format(name) for name in class_names for t in templates]
    tokens = tokenize(prompts, context_length=model.config.text.context_length)
    features = []
    for start in range(0, len(tokens), batch_size):
        features.append(_normalise(encode_text(model, variables, tokens[start : start + batch_size])))
    features = jnp.concatenate(features).reshape(len(class_names), len(templates), -1)
    return _normalise(features.mean(axis=1)).T


def zero_shot_accuracy(model, variables, batches: Iterable[Mapping[str, np.ndarray]], weights,
                       num_classes: int | None = None) -> dict:
    """top1, top5 (%), mean per-class recall (%) and the example count.

    batches: dicts with "images" [B, H, W, 3], "labels" int [B] and optionally "mask"
    bool [B] (False on padding rows)."""
    num_classes = num_classes or weights.shape[1]
    correct1 = correct5 = total = 0
    per_class_hits = np.zeros(num_classes)
    per_class_count = np.zeros(num_classes)
    k = min(5, num_classes)
    for batch in batches:
        labels = np.asarray(batch["labels"])
        mask = np.asarray(batch.get("mask", np.ones(len(labels), bool)))
        if labels[mask].size and (labels[mask].min() < 0 or labels[mask].max() >= num_classes):
            raise ValueError(f"labels range {labels[mask].min()}..{labels[mask].max()} does not fit "
                             f"{num_classes} class names")
        logits = np.asarray(_normalise(encode_image(model, variables, batch["images"])) @ weights)
        top = np.argsort(-logits, axis=1)[:, :k]
        hit1 = (top[:, 0] == labels) & mask
        hit5 = (top == labels[:, None]).any(axis=1) & mask
        correct1 += int(hit1.sum())
        correct5 += int(hit5.sum())
        total += int(mask.sum())
        np.add.at(per_class_hits, labels[mask], hit1[mask])
        np.add.at(per_class_count, labels[mask], 1)
    if not total:
        raise ValueError("no examples to evaluate")
    present = per_class_count > 0
    return {
        "top1": 100.0 * correct1 / total,
        "top5": 100.0 * correct5 / total,
        "mean_per_class_recall": 100.0 * float(np.mean(per_class_hits[present] / per_class_count[present])),
        "examples": total,
    }
