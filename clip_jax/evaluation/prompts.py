"""Class names and prompt templates: the shipped lists (data/prompts.json), files, or inline.

Shipped keys (see data/make_prompts.py for where each list comes from):
  imagenet1k (alias imagenet): OpenAI's 1,000 edited class names and 80 templates;
  imagenet1k_simple: the notebook's 7-template subset;
  and CLIP_benchmark's keys for the other datasets (cifar10, cifar100, food101, pets, ...).
Some entries have templates but no class names (the dataset's own names are then used)
and CLIP_benchmark's pcam (2 templates) and resisc45 (4) differ from OpenAI's prompts.md
(1 and 18).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Sequence

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "prompts.json")
ALIASES = {"imagenet": "imagenet1k", "imagenet_simple": "imagenet1k_simple"}


@functools.lru_cache(maxsize=1)
def shipped() -> dict:
    """{key: {"class_names": [...], "templates": [...], "source": str}} from prompts.json."""
    with open(_DATA, encoding="utf-8") as f:
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


def resolve_class_names(value: str | Sequence[str] | None) -> list[str] | None:
    """Class names from a shipped key, a file (one per line, or a JSON list) or a list."""
    if value is None or (not isinstance(value, str) and not len(value)) or value == "":
        return None
    if not isinstance(value, str):
        return list(value)
    if _entry(value) is not None:
        names = _entry(value).get("class_names")
        if not names:
            raise ValueError(f"shipped prompts {value!r} have no class names; the dataset's own are used "
                             "when --class_names is left out")
        return list(names)
    if os.path.isfile(value):
        return json.load(open(value)) if value.endswith(".json") else _read_lines(value)
    raise ValueError(f"class names {value!r}: neither a shipped key nor a file")
