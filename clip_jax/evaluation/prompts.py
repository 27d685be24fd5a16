"""Class names and prompt templates: the shipped lists (data/prompts.json), files, or inline;
and the shipped class subsets (data/class_subsets.json).

Shipped keys (data/make_prompts.py generates both files and says where each list comes from;
every entry's "source" names its origin):
  imagenet1k (alias imagenet): OpenAI's 1,000 edited class names and 80 templates;
  imagenet1k_simple: the notebook's 7-template subset;
  the paper's 26 other datasets, from OpenAI's data/prompts.md: birdsnap, cifar10, cifar100,
    clevr_count_all, caltech101, country211, dtd, eurosat, fgvc_aircraft, fer2013, flowers,
    food101, gtsrb, hateful_memes, kitti_closest_vehicle_distance, kinetics700, mnist, pets,
    voc2007, pcam, resisc45, renderedsst2, stl10, sun397, cars, ucf101.  Class order is
    OpenAI's, i.e. the label order of their copies of the datasets; it is not always the
    label order of TFDS or torchvision (pets, eurosat, clevr_count_all, fer2013 and
    caltech101 differ from some loaders), so check before pairing a list with a dataset.
    fer2013 has several names for some classes: such a class is a list of names, and its
    embedding averages the prompts of every name;
  <key>_clip_benchmark: CLIP_benchmark 1.6.2's list where it differs from prompts.md;
  CLIP_benchmark's keys for datasets outside the paper (svhn, dmlab, ...).  Some of these
    (dsprites_*, smallnorb_*) have templates only: their class names are the dataset's own.
Class subsets: imagenet_a and imagenet_r, the 200 ImageNet-1k class indices (and wnids) of
ImageNet-A and ImageNet-R, from the datasets' authors.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Sequence

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "prompts.json")
_SUBSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "class_subsets.json")
ALIASES = {"imagenet": "imagenet1k", "imagenet_simple": "imagenet1k_simple"}


@functools.lru_cache(maxsize=1)
def shipped() -> dict:
    """{key: {"class_names": [...], "templates": [...], "source": str}} from prompts.json."""
    with open(_DATA, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=1)
def shipped_subsets() -> dict:
    """{key: {"indices": [...], "wnids": [...], "source": str}} from class_subsets.json."""
    with open(_SUBSETS, encoding="utf-8") as f:
        return json.load(f)


def _entry(key: str) -> dict | None:
    return shipped().get(ALIASES.get(key, key))


def check_templates(templates: Sequence[str]) -> None:
    if not templates:
        raise ValueError("no prompt templates given; e.g. ['a photo of a {}.']")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"prompt templates must contain '{{}}' where the class name goes; these do not: {bad[:5]}")


def fill(template: str, name: str) -> str:
    # str.replace, not str.format: a template may contain other braces.
    return template.replace("{}", name)


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def resolve_templates(value: str | Sequence[str]) -> list[str]:
    """Templates from a shipped key ("imagenet", "cifar10"), a file (one per line, or a JSON
    list), inline text with '{}', or a list; checked to contain '{}'."""
    if not isinstance(value, str):
        templates = list(value)
    elif _entry(value) is not None:
        templates = list(_entry(value).get("templates") or ())
        if not templates:
            raise ValueError(f"shipped prompts {value!r} have no templates; pass --templates")
    elif os.path.isfile(value):
        templates = json.load(open(value)) if value.endswith(".json") else _read_lines(value)
    elif "{}" in value:
        templates = [value]
    else:
        raise ValueError(f"templates {value!r}: not a shipped key ({', '.join(sorted(shipped()))}), "
                         "not a file, and no '{}' where the class name goes")
    check_templates(templates)
    return templates


def _check_names(names: list, origin: str) -> list:
    for name in names:
        ok = isinstance(name, str) if not isinstance(name, (list, tuple)) else (
            len(name) > 0 and all(isinstance(n, str) for n in name))
        if not ok:
            raise ValueError(f"class names from {origin}: each must be a name or a non-empty list of names "
                             f"(synonyms), got {name!r}")
    return [list(n) if isinstance(n, (list, tuple)) else n for n in names]


def resolve_class_names(value: str | Sequence | None) -> list | None:
    """Class names from a shipped key, a file (one per line, or a JSON list) or a list.
    A class may be a list of names (synonyms), as fer2013's."""
    if value is None or (not isinstance(value, str) and not len(value)) or value == "":
        return None
    if not isinstance(value, str):
        return _check_names(list(value), "the list given")
    if _entry(value) is not None:
        names = _entry(value).get("class_names")
        if not names:
            raise ValueError(f"shipped prompts {value!r} have no class names; the dataset's own are used "
                             "when --class_names is left out")
        return _check_names(list(names), f"shipped key {value!r}")
    if os.path.isfile(value):
        names = json.load(open(value)) if value.endswith(".json") else _read_lines(value)
        if not isinstance(names, list):
            raise ValueError(f"class names file {value!r}: a JSON file must hold a list")
        return _check_names(names, f"file {value!r}")
    raise ValueError(f"class names {value!r}: neither a shipped key nor a file")


def resolve_class_subset(value: str | Sequence[int] | None) -> tuple[list[int], list[str] | None] | None:
    """(indices into the class names, their wnids if known) from a shipped subset key
    (imagenet_a, imagenet_r), a file (one index per line, or a JSON list) or a list."""
    if value is None or (not isinstance(value, str) and not len(value)) or value == "":
        return None
    wnids = None
    if isinstance(value, str):
        if value in shipped_subsets():
            entry = shipped_subsets()[value]
            indices, wnids = entry["indices"], entry["wnids"]
        elif os.path.isfile(value):
            indices = json.load(open(value)) if value.endswith(".json") else _read_lines(value)
        else:
            raise ValueError(
                f"class subset {value!r}: neither a shipped subset ({', '.join(sorted(shipped_subsets()))}) nor a file"
            )
    else:
        indices = list(value)
    try:
        indices = [int(i) for i in indices]
    except (TypeError, ValueError) as error:
        raise ValueError(f"class subset {value!r}: indices must be integers ({error})") from error
    if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
        raise ValueError(f"class subset {value!r}: needs distinct non-negative indices")
    return indices, wnids
