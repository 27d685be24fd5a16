"""Classification scores shared by zero-shot and linear-probe evaluation.

Definitions as in CLIP_benchmark: top-k accuracy (a hit when the label is among the k
highest scores) and mean per-class recall (the mean over classes present in the labels
of each class's top-1 recall, i.e. balanced accuracy).  All in percent.  Top-5 needs at
least 5 classes: with fewer it would be 100% whatever the model, so it is left out of
the result (CLIP_benchmark reports NaN).

Ties (equal scores: duplicate class names, constant or duplicate features) go to the
lowest class index, as a stable sort orders them: the top-1 prediction is the first
maximum, as `numpy.argmax`, `torch.argmax` (CLIP_benchmark's mean per-class recall) and
scikit-learn's `predict` choose it.  CLIP_benchmark's top-1 and top-5 read `torch.topk`,
whose order among ties is not specified; they agree with these wherever scores differ.
"""
from __future__ import annotations

import numpy as np


def classification_metrics(scores, labels, num_classes: int | None = None) -> dict:
    """top1, top5 (with K >= 5), mean_per_class_recall (%) and examples, from scores [N, K]
    and labels [N]."""
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels)
    num_classes = num_classes or scores.shape[1]
    if not len(labels):
        raise ValueError("no examples to evaluate")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels range {labels.min()}..{labels.max()} does not fit {num_classes} classes "
                         "(a dataset without labels, or class names that do not match its labels)")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hit1 = top[:, 0] == labels
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=hit1, minlength=num_classes)
    present = counts > 0
    metrics = {"top1": 100.0 * float(hit1.mean())}
    if num_classes >= 5:
        metrics["top5"] = 100.0 * float((top == labels[:, None]).any(axis=1).mean())
    metrics["mean_per_class_recall"] = 100.0 * float(np.mean(hits[present] / counts[present]))
    metrics["examples"] = int(len(labels))
    return metrics
