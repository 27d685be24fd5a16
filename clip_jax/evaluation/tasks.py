"""Evaluation tasks: each one an object with `validate(spec)` (the spec alone, no model),
`check(model, spec, tokenizer)` (the model and the dataset's headers and labels, no
image decoded; returns what it resolved) and `run(model, variables, spec, checked)`
(metrics), registered in `TASKS` by name.  The runner, eval.py's --task choices and
flags, and the validation of training configs and suites all read this one table, so a
new task is one class here plus one `register` line.

What each task's spec holds is in clip_jax/evaluation/runner.py's docstring.
"""
from __future__ import annotations

import abc
import os
import re
from typing import Mapping, Sequence

import jax
import numpy as np

from clip_jax import classifier, tokenizers
from clip_jax.evaluation import features as features_lib
from clip_jax.evaluation.linear_probe import kshot_indices, linear_probe
from clip_jax.evaluation.metrics import classification_metrics
from clip_jax.evaluation.prompts import resolve_class_names, resolve_class_subset, resolve_templates
from clip_jax.evaluation.retrieval import flatten_captions, retrieval_metrics
from clip_jax.evaluation.tip_adapter import tip_adapter
from clip_jax.evaluation.zeroshot import classifier_weights, default_templates, zero_shot_scores


def _label(spec: Mapping) -> str:
    return f"evaluation {spec.get('name')!r}"


def readable(names: Sequence[str]) -> list[str]:
    """Dataset label names made prompt-friendly: 'apple_pie' -> 'apple pie',
    SUN397's '/b/bakery/shop' -> 'bakery shop'."""
    out = []
    for name in names:
        name = re.sub(r"^/?[a-z]/", "", name)
        out.append(re.sub(r"[_/]+", " ", name).strip())
    return out


def _origin(value) -> str:
    return repr(value) if isinstance(value, str) else "the list"


_WNID = re.compile(r"^n\d{8}$")


def _dataset_classes(spec: Mapping, data_spec: str) -> tuple[list[str] | None, np.ndarray | None]:
    """(the dataset's own class names or None, its labels when cheap to read or None)."""
    from clip_jax import data

    own = data.class_names(data_spec)
    return own, (None if own is not None else data.dataset_labels(data_spec))


def _label_count(spec: Mapping, own, labels) -> int | None:
    """The dataset's class count: its own names, else its largest label + 1."""
    if own is not None:
        return len(own)
    if labels is None:
        return None
    if not len(labels) or labels.max() < 0:
        raise ValueError(f"{_label(spec)}: {spec['data']!r} has no labels; zero-shot classification needs "
                         "labelled data (folder classes, a TFDS ClassLabel, a CSV ?label=COLUMN or .cls members)")
    return int(labels.max()) + 1


def _describe(own, count: int) -> str:
    return f"{count} classes" if own is not None else f"labels 0..{count - 1} ({count} classes)"


def zeroshot_classes(spec: Mapping) -> tuple[list, np.ndarray | None]:
    """(the class names the classifier scores, a map from dataset labels to their columns
    or None when labels index the names directly).  Every mismatch of class names, class
    subset and dataset is an error here, before any feature is computed."""
    given = resolve_class_names(spec.get("class_names"))
    subset = resolve_class_subset(spec.get("class_subset"))
    own, labels = _dataset_classes(spec, spec["data"])
    count = _label_count(spec, own, labels)
    names = given if given is not None else (readable(own) if own is not None else None)
    if names is None:
        raise ValueError(f"{_label(spec)}: {spec['data']!r} has no class names; set class_names")
    origin = _origin(spec["class_names"]) if given is not None else "the dataset's own names"
    check_count = spec.get("check_class_count", True)
    if subset is None:
        if given is not None and count is not None and count != len(given) and (own is not None or check_count):
            raise ValueError(
                f"{_label(spec)}: {len(given)} class names given in {origin} but {spec['data']!r} has "
                f"{_describe(own, count)}; the class names must be the dataset's classes in label order"
                + ("" if own is not None else " (if the data holds only some classes, set check_class_count=False)"))
        return names, None

    indices, wnids = subset
    key = spec["class_subset"] if isinstance(spec["class_subset"], str) else f"a list of {len(indices)} indices"
    if max(indices) >= len(names):
        raise ValueError(f"{_label(spec)}: class subset {key} indexes class {max(indices)} but the class names "
                         f"({origin}) are {len(names)}")
    position = np.full(len(names), -1, np.int64)
    position[indices] = np.arange(len(indices))
    if count is None or count == len(names) or (own is None and len(indices) < count <= len(names)):
        label_map, full = position, True  # labels index every class: map them onto the subset
    elif count == len(indices) or (own is None and count < len(indices)):
        label_map, full = None, False  # labels already index the subset
    else:
        raise ValueError(
            f"{_label(spec)}: {spec['data']!r} has {_describe(own, count)}; with class subset {key} "
            f"({len(indices)} of the {len(names)} class names in {origin}) its labels must index either all "
            f"{len(names)} classes or the {len(indices)} of the subset"
        )
    if wnids is not None and own is not None and all(_WNID.match(n) for n in own):
        theirs = [own[i] for i in indices] if full else list(own)
        if theirs != wnids:
            raise ValueError(f"{_label(spec)}: {spec['data']!r}'s classes are not the wnids of class subset {key}")
    if labels is not None and label_map is not None:
        outside = sorted(set(labels[(labels >= 0)].tolist()) - set(indices))
        if outside:
            raise ValueError(f"{_label(spec)}: {spec['data']!r} has labels outside class subset {key}: {outside[:10]}")
    return [names[i] for i in indices], label_map


def _features(
    model, variables, spec: Mapping, data_spec: str, *, project: bool = True, texts: bool = False, tokenizer=None
):
    from clip_jax import data

    size = model.config.vision.image_size

    def compute():
        batches = data.eval_batches(
            data_spec,
            batch_size=int(spec.get("batch_size", 256)),
            image_size=size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            family=model.config.family,
        )
        return features_lib.extract(model, variables, batches, project=project, texts=texts, tokenizer=tokenizer)

    cache_dir = spec.get("cache_dir") if spec.get("checkpoint_id") else None
    key = features_lib.cache_key(
        checkpoint=spec.get("checkpoint_id"), data=data_spec, image_size=size, project=project, texts=texts
    )
    return features_lib.cached(cache_dir, key, compute)


class Task(abc.ABC):
    """The contract every evaluation task fills in (`run` it must define)."""

    name = ""
    # Spec keys that eval.py fills from its flags of the same name for this task.
    flags: tuple[str, ...] = ()
    # run() gets a classification fine-tune's head in variables["head"] (others never do).
    uses_head = False

    def validate(self, spec: Mapping) -> None:
        """ValueError for a malformed spec (no model needed)."""

    def check(self, model, spec: Mapping, tokenizer=None) -> dict:
        """ValueError for a model/dataset mismatch; what the checks resolved, for `run`."""
        return {}

    @abc.abstractmethod
    def run(self, model, variables, spec: Mapping, checked: Mapping) -> dict:
        """The task's metrics, from what `check` resolved."""


def _resolved_tokenizer(model, spec: Mapping, tokenizer) -> dict:
    try:
        return {"tokenizer": tokenizers.resolve(model, spec.get("tokenizer") or tokenizer)}
    except ValueError as error:
        raise ValueError(f"{_label(spec)}: {error}") from error


class ZeroShot(Task):
    name = "zeroshot"
    uses_head = True
    flags = ("templates", "class_names", "class_subset", "check_class_count")

    def validate(self, spec):
        resolve_templates(spec.get("templates") or "a photo of a {}.")
        resolve_class_names(spec.get("class_names"))
        resolve_class_subset(spec.get("class_subset"))

    def check(self, model, spec, tokenizer=None):
        resolved = _resolved_tokenizer(model, spec, tokenizer)
        classes, label_map = zeroshot_classes(spec)
        return {"classes": classes, "label_map": label_map, **resolved}

    def run(self, model, variables, spec, checked):
        names, label_map = checked["classes"], checked["label_map"]
        head = variables.get(classifier.HEAD)
        variables = classifier.model_variables(variables)
        if head is None:
            templates = (resolve_templates(spec["templates"]) if spec.get("templates")
                         else default_templates(model.config))
            weights = classifier_weights(model, variables, names, templates, tokenizer=checked["tokenizer"])
        else:  # a classification fine-tune's own head scores the classes it was trained on
            classifier.check_head(head, len(names), _label(spec))
        feats = _features(model, variables, spec, spec["data"])
        labels = feats.labels
        if label_map is not None:
            if len(labels) and (labels.min() < 0 or labels.max() >= len(label_map)):
                raise ValueError(
                    f"{_label(spec)}: labels range {labels.min()}..{labels.max()} does not fit the "
                    f"{len(label_map)} class names"
                )
            labels = label_map[labels]
            if len(labels) and labels.min() < 0:
                raise ValueError(f"{_label(spec)}: some labels are outside the class subset")
        scores = (zero_shot_scores(feats.images, weights) if head is None
                  else np.asarray(classifier.logits(feats.images, head)))
        return classification_metrics(scores, labels, len(names))


ZERO_SHOT = ZeroShot()  # the robustness task scores each of its sets with it


class Retrieval(Task):
    name = "retrieval"

    def check(self, model, spec, tokenizer=None):
        return _resolved_tokenizer(model, spec, tokenizer)

    def run(self, model, variables, spec, checked):
        feats = _features(model, variables, spec, spec["data"], texts=True, tokenizer=checked["tokenizer"])
        texts, text_image = flatten_captions(feats.texts, feats.text_mask)
        return retrieval_metrics(feats.images, texts, text_image, ks=tuple(spec.get("ks", (1, 5, 10))))


class LinearProbe(Task):
    name = "linear_probe"
    flags = ("train_data", "val_data", "kshot", "features", "normalize", "seed")

    def validate(self, spec):
        if not spec.get("train_data"):
            raise ValueError("linear_probe needs train_data")
        if spec.get("features", "pre") not in ("pre", "post"):
            raise ValueError(f"features must be 'pre' or 'post', got {spec.get('features')!r}")
        if spec.get("kshot") is not None and int(spec["kshot"]) < 0:
            raise ValueError(f"kshot must be positive, got {spec['kshot']}")

    def check(self, model, spec, tokenizer=None):
        for key in ("train_data", "val_data", "data"):
            if spec.get(key):
                own, labels = _dataset_classes(spec, spec[key])
                if own is None and labels is not None and (not len(labels) or labels.max() < 0):
                    raise ValueError(
                        f"{_label(spec)}: the linear probe needs labelled data; {spec[key]!r} has no labels"
                    )
        return {}

    def run(self, model, variables, spec, checked):
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
        return linear_probe(
            x("train"),
            feats["train"].labels,
            x("test"),
            feats["test"].labels,
            num_classes,
            val_x=x("val") if "val" in feats else None,
            val_y=feats["val"].labels if "val" in feats else None,
            kshot=spec.get("kshot") or None,
            seed=int(spec.get("seed", 0)),
            lam=spec.get("lambda"),
            warm_start=bool(spec.get("warm_start", False)),
        )


class TipAdapter(Task):
    """Few-shot without training (Tip-Adapter) and with trained keys (Tip-Adapter-F),
    beside zero-shot and, with val_data, the k-shot linear probe on the same examples."""

    name = "tip_adapter"
    flags = ("train_data", "val_data", "kshot", "seed", "templates", "class_names")

    def validate(self, spec):
        if not spec.get("train_data"):
            raise ValueError("tip_adapter needs train_data (the labelled set its k-shot cache is drawn from)")
        if spec.get("class_subset"):
            raise ValueError("tip_adapter scores every class; class_subset is not supported")
        if spec.get("kshot") is not None and int(spec["kshot"]) < 0:
            raise ValueError(f"kshot must be positive (0: the default, 16), got {spec['kshot']}")
        resolve_templates(spec.get("templates") or "a photo of a {}.")
        resolve_class_names(spec.get("class_names"))

    def check(self, model, spec, tokenizer=None):
        resolved = _resolved_tokenizer(model, spec, tokenizer)
        classes, _ = zeroshot_classes(spec)
        for key in ("train_data", "val_data"):
            if spec.get(key):
                own, labels = _dataset_classes(spec, spec[key])
                if own is None and labels is not None and (not len(labels) or labels.max() < 0):
                    raise ValueError(f"{_label(spec)}: the few-shot cache needs labelled data; {spec[key]!r} has "
                                     "no labels")
        return {"classes": classes, **resolved}

    def run(self, model, variables, spec, checked):
        names = checked["classes"]
        templates = resolve_templates(spec["templates"]) if spec.get("templates") else default_templates(model.config)
        weights = classifier_weights(model, variables, names, templates, tokenizer=checked["tokenizer"])
        test = _features(model, variables, spec, spec["data"])
        train = _features(model, variables, spec, spec["train_data"])
        val = _features(model, variables, spec, spec["val_data"]) if spec.get("val_data") else None
        kshot, seed = int(spec.get("kshot") or 16), int(spec.get("seed", 0))
        picked = kshot_indices(train.labels, kshot, seed)
        cache_x, cache_y = train.images[picked], train.labels[picked]
        metrics = tip_adapter(cache_x, cache_y, test.images, test.labels, weights, len(names),
                              val_x=None if val is None else val.images, val_y=None if val is None else val.labels,
                              seed=seed)
        if val is not None:  # the paper's other few-shot baseline, on the same k examples per class
            probe = linear_probe(cache_x, cache_y, test.images, test.labels, len(names), val_x=val.images,
                                 val_y=val.labels, seed=seed)
            metrics["linear_probe_top1"] = probe["top1"]
        metrics["kshot"] = kshot
        return metrics


def set_name(data_spec: str) -> str:
    """A short name of a dataset for a report: the last part of its path or TFDS name, and
    the values of its options that are not paths ("folder:/data/imagenet-sketch/val" ->
    "val", "tfds:imagenet_r:test" -> "imagenet_r", "demo:val?style=outline" -> "val_outline")."""
    kind, _, target = data_spec.partition(":")
    target, _, query = target.partition("?")
    target = target.rstrip("/")
    if kind == "tfds":
        name = target.split(":")[0].replace("/", "_")
    else:
        base = os.path.basename(target)
        if "{" in base or "*" in base:  # shard patterns: the folder names the set
            base = os.path.basename(os.path.dirname(target))
        name = base.split(".")[0] or kind
    values = [v for _, _, v in (item.partition("=") for item in query.split("&") if item) if v and "/" not in v]
    return "_".join([name, *values])


class Robustness(Task):
    """Zero-shot (or a fine-tune's head) accuracy on an in-distribution set and on shifted
    sets in one run: per set, the mean over the shifted sets, and with `baseline` (the
    zero-shot model's checkpoint) its accuracies and the effective robustness against it:
    (shift_avg - baseline shift_avg) - (id - baseline id), in points of top-1.  0 means the
    shifted sets moved exactly as much as the in-distribution set did; WiSE-FT's claim is
    that fine-tuning alone makes it negative and the weight-space mix recovers it."""

    name = "robustness"
    uses_head = True
    flags = ("shift", "baseline", "templates", "class_names", "class_subset", "check_class_count")

    def _sets(self, spec) -> dict[str, Mapping]:
        names = {}
        for key, data in [("id", spec["data"])] + [(set_name(s), s) for s in spec.get("shift") or ()]:
            unique, n = key, 1
            while unique in names:
                n += 1
                unique = f"{key}_{n}"
            names[unique] = {**spec, "task": "zeroshot", "name": f"{spec['name']}/{unique}", "data": data}
        return names

    def validate(self, spec):
        shifts = spec.get("shift")
        if not shifts or isinstance(shifts, str):
            raise ValueError(f"robustness needs shift: a list of one or more shifted dataset specs; got {shifts!r}")
        for one in self._sets(spec).values():
            ZERO_SHOT.validate(one)

    def check(self, model, spec, tokenizer=None):
        return {name: ZERO_SHOT.check(model, one, tokenizer) for name, one in self._sets(spec).items()}

    def run(self, model, variables, spec, checked):
        sets = self._sets(spec)
        top1 = {name: ZERO_SHOT.run(model, variables, one, checked[name])["top1"] for name, one in sets.items()}
        metrics = {f"{name}_top1": value for name, value in top1.items()}
        shifted = [v for k, v in top1.items() if k != "id"]
        metrics["shift_avg_top1"] = float(np.mean(shifted))
        if spec.get("baseline"):
            import clip_jax

            base_model, base_variables = clip_jax.load_checkpoint(spec["baseline"])
            if base_model.config != model.config:
                raise ValueError(f"{_label(spec)}: baseline {spec['baseline']} is another architecture than the "
                                 "checkpoint evaluated; give the zero-shot model it was fine-tuned from")
            base_variables = classifier.model_variables(base_variables)
            base = {name: ZERO_SHOT.run(base_model, base_variables, {**one, "checkpoint_id": None}, checked[name])
                    ["top1"] for name, one in sets.items()}
            base_shift = float(np.mean([v for k, v in base.items() if k != "id"]))
            metrics.update({f"baseline_{name}_top1": value for name, value in base.items()})
            metrics["baseline_shift_avg_top1"] = base_shift
            metrics["effective_robustness"] = (metrics["shift_avg_top1"] - base_shift) - (top1["id"] - base["id"])
        return metrics


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


register(ZERO_SHOT)
register(Retrieval())
register(LinearProbe())
register(TipAdapter())
register(Robustness())


def validate_all(evals) -> None:
    """Errors for malformed evaluation specs: distinct names, a known task, data, and the task's own checks."""
    names = [spec.get("name") for spec in evals]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"every evaluation needs a distinct name; got {names}")
    for spec in evals:
        task = spec.get("task")
        if task not in TASKS:
            raise ValueError(f"{_label(spec)}: task {task!r} unknown; valid: {tuple(TASKS)}")
        if not spec.get("data"):
            raise ValueError(f"{_label(spec)}: no data (a dataset spec string)")
        try:
            TASKS[task].validate(spec)
        except ValueError as error:
            raise ValueError(f"{_label(spec)}: {error}") from error


def check(model, spec: Mapping, tokenizer=None) -> dict:
    """The checks every task shares (the image size), then the task's own."""
    expected = model.config.vision.image_size
    if spec.get("image_size") and int(spec["image_size"]) != expected:
        raise ValueError(
            f"{_label(spec)}: image size {spec['image_size']} does not fit the checkpoint, "
            f"which takes {expected}x{expected} images"
        )
    return TASKS[spec["task"]].check(model, spec, tokenizer)
