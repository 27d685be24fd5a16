"""Classification scores shared by zero-shot and linear-probe evaluation.

Definitions as in CLIP_benchmark: top-k accuracy (a hit when the label is among the k
highest scores, k capped at the class count) and mean per-class recall (the mean over
classes present in the labels of each class's top-1 recall, i.e. balanced accuracy).
All in percent.
"""
from __future__ import annotations

import numpy as np


def classification_metrics(scores, labels, num_classes: int | None = None) -> dict:
    """top1, top5, mean_per_class_recall (%) and examples, from scores [N, K] and labels [N]."""
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels)
    num_classes = num_classes or scores.shape[1]
    if not len(labels):
        raise ValueError("no examples to evaluate")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels range {labels.min()}..{labels.max()} does not fit {num_classes} classes "
                         "(a dataset without labels, or class names that do not match its labels)")
    k = min(5, num_classes)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit1 = top[:, 0] == labels
    hitk = (top == labels[:, None]).any(axis=1)
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=hit1, minlength=num_classes)
    present = counts > 0
    return {
        "top1": 100.0 * float(hit1.mean()),
        "top5": 100.0 * float(hitk.mean()),
        "mean_per_class_recall": 100.0 * float(np.mean(hits[present] / counts[present])),
        "examples": int(len(labels)),
    }
