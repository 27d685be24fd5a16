"""The one small interface the trainer (and eval.py) use to run evaluations.

An evaluation is a ConfigDict: name, task ("zeroshot"), data (a spec string),
templates (prompt templates with '{}'), class_names (optional list; else the
dataset's own), batch_size.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax

from clip_jax.evaluation.zeroshot import check_templates, classifier_weights, zero_shot_accuracy

TASKS = ("zeroshot",)


def validate(evals: Sequence[Mapping]) -> None:
    for spec in evals:
        if spec["task"] not in TASKS:
            raise ValueError(f"evaluation {spec.get('name')!r}: task {spec['task']!r} unknown; valid: {TASKS}")
        check_templates(list(spec["templates"]))


def run_zeroshot(model, variables, spec: Mapping) -> dict:
    from clip_jax import data

    names = list(spec.get("class_names") or ()) or data.class_names(spec["data"])
    if not names:
        raise ValueError(f"evaluation {spec.get('name')!r}: {spec['data']!r} has no class names; "
                         "set class_names in the evaluation config")
    weights = classifier_weights(model, variables, names, list(spec["templates"]))
    batches = data.eval_batches(spec["data"], batch_size=spec.get("batch_size", 256),
                                image_size=model.config.vision.image_size,
                                process_index=jax.process_index(), process_count=jax.process_count())
    return zero_shot_accuracy(model, variables, batches, weights, num_classes=len(names))


def run_evals(model, variables, evals: Sequence[Mapping]) -> dict[str, float]:
    """Flat metrics {"eval/<name>/<metric>": value} of every configured evaluation."""
    results = {}
    for spec in evals:
        metrics = run_zeroshot(model, variables, spec)
        results.update({f"eval/{spec['name']}/{k}": v for k, v in metrics.items()})
    return results
