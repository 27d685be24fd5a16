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


def _zeroshot(name: str, target: str | None, prompts: str | None = None, shipped_names: bool = False,
              class_subset: str | None = None) -> dict:
    """A zero-shot entry: TFDS name:split (None: not in TFDS), the shipped prompt key, and
    whether the shipped (OpenAI) class names are used instead of the dataset's own."""
    return {"name": name, "data": target, "templates": prompts, "class_names": prompts if shipped_names else None,
            **({"class_subset": class_subset} if class_subset else {})}


ZEROSHOT_PAPER = [
    _zeroshot("food101", "food101:validation", "food101"),
    _zeroshot("cifar10", "cifar10:test", "cifar10"),
    _zeroshot("cifar100", "cifar100:test", "cifar100"),
    _zeroshot("sun397", "sun397/tfds:test", "sun397"),
    _zeroshot("cars", "cars196:test", "cars"),
    _zeroshot("voc2007", None),  # multi-label detection in TFDS: not a classification set
    _zeroshot("dtd", "dtd:test", "dtd"),
    _zeroshot("pets", "oxford_iiit_pet:test", "pets"),
    _zeroshot("caltech101", "caltech101:test", "caltech101"),
    _zeroshot("flowers", "oxford_flowers102:test", "flowers"),
    _zeroshot("mnist", "mnist:test", "mnist"),
    _zeroshot("stl10", "stl10:test", "stl10"),
    _zeroshot("eurosat", "eurosat/rgb:train", "eurosat"),
    _zeroshot("resisc45", "resisc45:train", "resisc45"),
    _zeroshot("pcam", "patch_camelyon:test", "pcam"),
    _zeroshot("imagenet1k", "imagenet2012:validation", "imagenet1k", True),
]

# ImageNet-A and -R keep the 200 columns of their shipped class subsets (prompts.shipped_subsets).
IMAGENET_ROBUSTNESS = [
    _zeroshot("imagenet1k", "imagenet2012:validation", "imagenet1k", True),
    _zeroshot("imagenet_v2", "imagenet_v2:test", "imagenet1k", True),
    _zeroshot("imagenet_sketch", "imagenet_sketch:test", "imagenet1k", True),
    _zeroshot("imagenet_a", "imagenet_a:test", "imagenet1k", True, class_subset="imagenet_a"),
    _zeroshot("imagenet_r", "imagenet_r:test", "imagenet1k", True, class_subset="imagenet_r"),
]

RETRIEVAL = [
    {"name": "coco_5k", "data": "coco_captions:test"},
]

# suite -> (task, entries: the spec of each evaluation, "data" a TFDS name:split)
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
    for entry in entries:
        name, target = entry["name"], entry["data"]
        if target is None:
            skipped[name] = "no TFDS classification dataset"
            continue
        reason = _prepared(target, data_dir) if check_prepared else None
        if reason:
            skipped[name] = reason
            continue
        spec = f"tfds:{target}" + (f"?data_dir={data_dir}" if data_dir else "")
        evals.append({**entry, "task": task, "data": spec, "batch_size": batch_size})
    return evals, skipped
