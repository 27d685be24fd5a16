"""The one interface the trainer (and eval.py) use to run evaluations.

An evaluation is a dict or ConfigDict:
  name, task ("zeroshot" | "retrieval" | "linear_probe"), data (the dataset spec scored),
  batch_size (default 256), image_size (optional: must match the checkpoint),
  cache_dir and checkpoint_id (optional: features are cached when both are set);
  zeroshot: templates (shipped key, file, inline '{}' text or a list) and class_names
    (shipped key, file or list; default: the dataset's own names);
  linear_probe: train_data, val_data (optional: else 20% of train, seeded), features
    ("pre": the pre-projection features, as the paper; "post": the embedding),
    normalize (L2-normalise features, as CLIP_benchmark; default False), kshot, seed,
    lambda (fix the regularisation instead of searching it).
Every input check runs in `validate` (no model needed) and `check` (model and dataset
headers, no features) before any feature is computed.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import jax
import numpy as np

from clip_jax.evaluation import features as features_lib
from clip_jax.evaluation.linear_probe import linear_probe
from clip_jax.evaluation.prompts import resolve_class_names, resolve_templates
from clip_jax.evaluation.retrieval import flatten_captions, retrieval_metrics
from clip_jax.evaluation.metrics import classification_metrics
from clip_jax.evaluation.zeroshot import classifier_weights, zero_shot_scores

TASKS = ("zeroshot", "retrieval", "linear_probe")


def _label(spec: Mapping) -> str:
    return f"evaluation {spec.get('name')!r}"


def validate(evals: Sequence[Mapping]) -> None:
    """Errors for malformed evaluation configs (task, templates, class names, options)."""
    names = [spec.get("name") for spec in evals]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"every evaluation needs a distinct name; got {names}")
    for spec in evals:
        task = spec.get("task")
        if task not in TASKS:
            raise ValueError(f"{_label(spec)}: task {task!r} unknown; valid: {TASKS}")
        if not spec.get("data"):
            raise ValueError(f"{_label(spec)}: no data (a dataset spec string)")
        try:
            if task == "zeroshot":
                resolve_templates(spec.get("templates") or "a photo of a {}.")
                resolve_class_names(spec.get("class_names"))
            if task == "linear_probe":
                if not spec.get("train_data"):
                    raise ValueError("linear_probe needs train_data")
                if spec.get("features", "pre") not in ("pre", "post"):
                    raise ValueError(f"features must be 'pre' or 'post', got {spec.get('features')!r}")
                if spec.get("kshot") is not None and int(spec["kshot"]) < 0:
                    raise ValueError(f"kshot must be positive, got {spec['kshot']}")
        except ValueError as error:
            raise ValueError(f"{_label(spec)}: {error}") from error


def readable(names: Sequence[str]) -> list[str]:
    """Dataset label names made prompt-friendly: 'apple_pie' -> 'apple pie',
    SUN397's '/b/bakery/shop' -> 'bakery shop'."""
    out = []
    for name in names:
        name = re.sub(r"^/?[a-z]/", "", name)
        out.append(re.sub(r"[_/]+", " ", name).strip())
    return out


def _class_names(spec: Mapping) -> list[str] | None:
    from clip_jax import data

    given = resolve_class_names(spec.get("class_names"))
    own = data.class_names(spec["data"])
    if given is not None and own is not None and len(given) != len(own):
        raise ValueError(f"{_label(spec)}: {len(given)} class names given but {spec['data']!r} has "
                         f"{len(own)} classes")
    if given is not None:
        return given
    return readable(own) if own is not None else None


def check(model, spec: Mapping) -> None:
    """Errors for a checkpoint/dataset mismatch, before any feature is computed."""
    expected = model.config.vision.image_size
    if spec.get("image_size") and int(spec["image_size"]) != expected:
        raise ValueError(f"{_label(spec)}: image size {spec['image_size']} does not fit the checkpoint, "
                         f"which takes {expected}x{expected} images")
    if spec["task"] == "zeroshot" and not _class_names(spec):
        raise ValueError(f"{_label(spec)}: {spec['data']!r} has no class names; set class_names")


def _features(model, variables, spec: Mapping, data_spec: str, *, project: bool = True, texts: bool = False):
    from clip_jax import data

    size = model.config.vision.image_size

    def compute():
        batches = data.eval_batches(data_spec, batch_size=int(spec.get("batch_size", 256)), image_size=size,
                                    process_index=jax.process_index(), process_count=jax.process_count())
        return features_lib.extract(model, variables, batches, project=project, texts=texts)

    cache_dir = spec.get("cache_dir") if spec.get("checkpoint_id") else None
    key = features_lib.cache_key(checkpoint=spec.get("checkpoint_id"), data=data_spec, image_size=size,
                                 project=project, texts=texts)
    return features_lib.cached(cache_dir, key, compute)


def run_zeroshot(model, variables, spec: Mapping) -> dict:
    names = _class_names(spec)
    weights = classifier_weights(model, variables, names, resolve_templates(spec.get("templates") or "a photo of a {}."))
    feats = _features(model, variables, spec, spec["data"])
    return classification_metrics(zero_shot_scores(feats.images, weights), feats.labels, len(names))


def run_retrieval(model, variables, spec: Mapping) -> dict:
    feats = _features(model, variables, spec, spec["data"], texts=True)
    texts, text_image = flatten_captions(feats.texts, feats.text_mask)
    return retrieval_metrics(feats.images, texts, text_image, ks=tuple(spec.get("ks", (1, 5, 10))))


def run_linear_probe(model, variables, spec: Mapping) -> dict:
    project = spec.get("features", "pre") == "post"
    splits = {"train": spec["train_data"], "val": spec.get("val_data"), "test": spec["data"]}
    feats = {k: _features(model, variables, spec, v, project=project) for k, v in splits.items() if v}

    def x(split):
        f = feats[split].images
        return f / np.linalg.norm(f, axis=-1, keepdims=True) if spec.get("normalize") else f

    labels = np.concatenate([f.labels for f in feats.values()])
    if labels.min() < 0:
        raise ValueError(f"{_label(spec)}: the linear probe needs labelled data; some examples have none")
    num_classes = int(labels.max()) + 1
    return linear_probe(x("train"), feats["train"].labels, x("test"), feats["test"].labels, num_classes,
                        val_x=x("val") if "val" in feats else None,
                        val_y=feats["val"].labels if "val" in feats else None,
                        kshot=spec.get("kshot") or None, seed=int(spec.get("seed", 0)), lam=spec.get("lambda"))


RUNNERS = {"zeroshot": run_zeroshot, "retrieval": run_retrieval, "linear_probe": run_linear_probe}


def run_evals(model, variables, evals: Sequence[Mapping]) -> dict[str, float]:
    """Flat metrics {"eval/<name>/<metric>": value} of every configured evaluation.

    All configs and inputs are checked first, so a bad one fails before any features."""
    validate(evals)
    for spec in evals:
        check(model, spec)
    results = {}
    for spec in evals:
        metrics = RUNNERS[spec["task"]](model, variables, spec)
        results.update({f"eval/{spec['name']}/{k}": v for k, v in metrics.items()})
    return results
