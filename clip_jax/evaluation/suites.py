"""Named groups of evaluations on TFDS datasets: the paper's zero-shot suite, the ImageNet
robustness variants and COCO retrieval.

Nothing is downloaded: a dataset that is not prepared in the TFDS data dir is reported
and skipped.  Paper datasets that TFDS does not have (Birdsnap, FGVC Aircraft, GTSRB,
Country211, FER2013, KITTI distance, CLEVR counts, Kinetics700, HatefulMemes, rendered
SST2, Flickr30k) are not in these suites: evaluate them from folder:/csv:/wds: specs.

Class names: ImageNet variants use OpenAI's edited names (TFDS labels follow the same
sorted-wnid order); ImageNet-A and ImageNet-R are scored over their 200 classes (the
shipped class subsets: the classifier keeps those 200 columns and TFDS's 1,000-class
labels are mapped onto them), as their authors and the paper do.  The other datasets use
their TFDS label names made readable, since the shipped (OpenAI) lists may order classes
differently from TFDS.
"""
from __future__ import annotations

# (eval name, TFDS name:split, shipped prompt key, use the shipped class names)
ZEROSHOT_PAPER = [
    ("food101", "food101:validation", "food101", False),
    ("cifar10", "cifar10:test", "cifar10", False),
    ("cifar100", "cifar100:test", "cifar100", False),
    ("sun397", "sun397/tfds:test", "sun397", False),
    ("cars", "cars196:test", "cars", False),
    ("voc2007", None, None, False),  # multi-label detection in TFDS: not a classification set
    ("dtd", "dtd:test", "dtd", False),
    ("pets", "oxford_iiit_pet:test", "pets", False),
    ("caltech101", "caltech101:test", "caltech101", False),
    ("flowers", "oxford_flowers102:test", "flowers", False),
    ("mnist", "mnist:test", "mnist", False),
    ("stl10", "stl10:test", "stl10", False),
    ("eurosat", "eurosat/rgb:train", "eurosat", False),
    ("resisc45", "resisc45:train", "resisc45", False),
    ("pcam", "patch_camelyon:test", "pcam", False),
    ("imagenet1k", "imagenet2012:validation", "imagenet1k", True),
]

IMAGENET_ROBUSTNESS = [
    ("imagenet1k", "imagenet2012:validation", "imagenet1k", True),
    ("imagenet_v2", "imagenet_v2:test", "imagenet1k", True),
    ("imagenet_sketch", "imagenet_sketch:test", "imagenet1k", True),
    ("imagenet_a", "imagenet_a:test", "imagenet1k", True),
    ("imagenet_r", "imagenet_r:test", "imagenet1k", True),
]

# eval name -> shipped class subset (prompts.shipped_subsets)
CLASS_SUBSETS = {"imagenet_a": "imagenet_a", "imagenet_r": "imagenet_r"}

RETRIEVAL = [
    ("coco_5k", "coco_captions:test", None, False),
]

SUITES = {"zeroshot_paper": ("zeroshot", ZEROSHOT_PAPER), "imagenet_robustness": ("zeroshot", IMAGENET_ROBUSTNESS),
          "retrieval": ("retrieval", RETRIEVAL)}


def _prepared(tfds_target: str, data_dir: str | None) -> str | None:
    """None when the dataset is ready, else the reason it is not."""
    import tensorflow_datasets as tfds

    name = tfds_target.split(":")[0]
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # TFDS raises several types for unknown names
        return f"TFDS has no dataset {name!r} ({type(error).__name__})"
    if not builder.is_prepared():
        return f"not prepared in {builder.data_dir!r} (run `tfds build {name}`)"
    return None


def suite_evals(suite: str, *, data_dir: str | None = None, batch_size: int = 256,
                check_prepared: bool = True) -> tuple[list[dict], dict]:
    """(evaluation specs for run_evals, {eval name: why skipped}).  check_prepared=False
    lists every dataset's spec without asking TFDS whether it has been built."""
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r} unknown; valid: {sorted(SUITES)}")
    task, entries = SUITES[suite]
    evals, skipped = [], {}
    for name, target, prompts, shipped_names in entries:
        if target is None:
            skipped[name] = "no TFDS classification dataset"
            continue
        reason = _prepared(target, data_dir) if check_prepared else None
        if reason:
            skipped[name] = reason
            continue
        spec = f"tfds:{target}" + (f"?data_dir={data_dir}" if data_dir else "")
        entry = {"name": name, "task": task, "data": spec, "batch_size": batch_size}
        if task == "zeroshot":
            entry["templates"] = prompts
            entry["class_names"] = prompts if shipped_names else None
            if name in CLASS_SUBSETS:
                entry["class_subset"] = CLASS_SUBSETS[name]
        evals.append(entry)
    return evals, skipped
