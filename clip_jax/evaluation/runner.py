"""The one interface the trainer (and eval.py) use to run evaluations.

An evaluation is a dict or ConfigDict:
  name, task (a name in clip_jax.evaluation.tasks.TASKS: "zeroshot", "retrieval",
  "linear_probe", "tip_adapter", "robustness"), data (the dataset spec scored),
  batch_size (default 256), image_size (optional: must match the checkpoint),
  cache_dir and checkpoint_id (optional: features are cached when both are set),
  tokenizer (zeroshot, retrieval; optional: the model's own, CLIP's BPE; a SigLIP model
    needs its SentencePiece file or folder, or a spec such as "siglip:PATH");
  zeroshot: templates (shipped key, file, inline '{}' text or a list; default: the
    model family's default template), class_names
    (shipped key, file or list; default: the dataset's own names), class_subset (a
    shipped subset such as imagenet_a / imagenet_r, a file or a list of indices into
    class_names: only those classes are scored; the dataset's labels may index either
    all of class_names, as TFDS's imagenet_a, or the subset, as a folder of its 200
    classes), check_class_count (default True: the class names must match the dataset's
    class count, read from its folders, TFDS features, CSV label column or WebDataset
    .cls members; False when the data holds only some of the classes);
  linear_probe: train_data, val_data (optional: else 20% of train, seeded), features
    ("pre": the pre-projection features, as the paper; "post": the embedding),
    normalize (L2-normalise features, as CLIP_benchmark; default False), kshot, seed,
    lambda (fix the regularisation instead of searching it), warm_start (default False;
    see linear_probe);
  tip_adapter: train_data (the labelled set the k-shot cache is drawn from), val_data
    (optional: α and β are searched on it, and the k-shot linear probe on the same examples
    is reported; else the paper's α = β = 1), kshot (default 16), seed, templates and
    class_names as zeroshot's;
  robustness: data (the in-distribution set), shift (a list of shifted sets, same
    classes), baseline (optional: the zero-shot checkpoint, for effective robustness),
    and zeroshot's keys.
Every input check runs in `validate` (no model needed) and `check` (model, dataset
headers and labels, no images decoded) before any feature is computed; each task's are
its own (clip_jax/evaluation/tasks.py).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from clip_jax import classifier
from clip_jax.evaluation.tasks import TASKS, check
from clip_jax.evaluation.tasks import validate_all as validate

__all__ = ["check", "run_evals", "validate"]


def run_evals(model, variables, evals: Sequence[Mapping], tokenizer=None) -> dict[str, float]:
    """Flat metrics {"eval/<name>/<metric>": value} of every configured evaluation.

    tokenizer: for evaluations whose spec names none (see clip_jax.tokenizers.resolve).
    All configs and inputs are checked first, so a bad one fails before any features."""
    validate(evals)
    checked = [check(model, spec, tokenizer) for spec in evals]
    results = {}
    for spec, resolved in zip(evals, checked):
        task = TASKS[spec["task"]]
        # A classification fine-tune's head (variables["head"]) is for zero-shot's classes only.
        metrics = task.run(model, variables if task.uses_head else classifier.model_variables(variables), spec,
                           resolved)
        results.update({f"eval/{spec['name']}/{k}": v for k, v in metrics.items()})
    return results
