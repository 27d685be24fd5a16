"""The pretrained checkpoints clip_jax loads by name: one row per (model name, tag), read
from checkpoints.json (package data; facts from open_clip's pretrained table and the
model cards).  open_clip's names and tags ("ViT-B-32", "laion2b_s34b_b79k"); SigLIP and
SigLIP 2 under their hub ids ("google/siglip-base-patch16-224", tag "webli").

Each row says where the weights are (`source`), the architecture they fit (a registered
name, with the activation the checkpoint was trained with) and the evaluation transform
it was trained with (`preprocessing`).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from typing import Iterable

TABLE_FILE = os.path.join(os.path.dirname(__file__), "checkpoints.json")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """An evaluation transform: `resize` "crop" (shorter side, centre crop) or "squash"
    (the whole image to a square), then (pixels / 255 - mean) / std.  `rgb_first`: convert
    to RGB before resizing (transformers' SigLIP processor) rather than after (OpenAI's
    and open_clip's transforms), which changes palette and RGBA images."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize: str = "crop"
    rgb_first: bool = False


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a checkpoint's weights are: a hub repository (`files`: the weight files to
    try in order, read with the row's architecture; empty: the repository read as a
    folder, config and tokenizer included), and/or a URL with the SHA-256 of its file
    (tried when the hub fails, for a row that has both)."""

    url: str = ""
    sha256: str = ""
    hf_hub: str = ""
    files: tuple[str, ...] = ()

    def __str__(self):
        hub = f"hf-hub:{self.hf_hub}" + (f" ({' or '.join(self.files)})" if self.files else "") if self.hf_hub else ""
        url = f"{self.url} (sha256 {self.sha256})" if self.url else ""
        return " or ".join(part for part in (hub, url) if part)


@dataclasses.dataclass(frozen=True)
class Pretrained:
    model: str  # the name users know: open_clip's, or the hub id
    tag: str  # what it was trained on (open_clip's pretrained tag)
    architecture: str  # a registered architecture name (clip_jax.available_models())
    act: str  # the activation the checkpoint was trained with
    source: Source
    preprocessing: Preprocessing

    @property
    def spec(self) -> str:
        """The one-string name every command line takes: NAME:TAG."""
        return f"{self.model}:{self.tag}"


def _read_table(path: str = TABLE_FILE) -> list[Pretrained]:
    with open(path) as f:
        data = json.load(f)
    presets = {name: Preprocessing(**{**p, "mean": tuple(p["mean"]), "std": tuple(p["std"])})
               for name, p in data["preprocessing"].items()}
    rows = []
    for row in data["checkpoints"]:
        files = tuple(data["weight_files"][row["files"]]) if "files" in row else ()
        source = Source(url=row.get("url", ""), sha256=row.get("sha256", ""), hf_hub=row.get("hf_hub", ""),
                        files=files)
        rows.append(Pretrained(row["model"], row["tag"], row.get("architecture", row["model"]), row["act"], source,
                               presets[row["preprocessing"]]))
    return rows


def check_row(row: Pretrained) -> None:
    """ValueError naming what is wrong with a row (the table's and `register`'s check).
    The architecture name is checked where it is built (`resolve_config`), so that this
    package stays below the models (tokenizers read checkpoint specs through it)."""
    if not row.source.url and not row.source.hf_hub:
        raise ValueError(f"pretrained {row.spec}: give a source: hf_hub (a repository), url (with sha256), or both")
    if row.source.url and not re.fullmatch(r"[0-9a-f]{64}", row.source.sha256):
        raise ValueError(f"pretrained {row.spec}: a URL source needs the file's SHA-256 as 64 lowercase hex digits, "
                         f"got {row.source.sha256!r}")
    if row.preprocessing.resize not in ("crop", "squash"):
        raise ValueError(f"pretrained {row.spec}: resize {row.preprocessing.resize!r} unknown; valid: crop, squash")


PRETRAINED: dict[tuple[str, str], Pretrained] = {}


def register(row: Pretrained) -> Pretrained:
    """Add a row (a checkpoint of one's own, a private hub or mirror); replaces a row of
    the same name and tag."""
    check_row(row)
    PRETRAINED[(row.model, row.tag)] = row
    return row


for _row in _read_table():
    register(_row)


def list_pretrained(model: str | None = None) -> list[Pretrained]:
    """Every row, or those of one model name (an unknown name: ValueError with the closest names)."""
    if model is None:
        return list(PRETRAINED.values())
    rows = [row for row in PRETRAINED.values() if row.model == model]
    if not rows:
        raise ValueError(_unknown_name(model))
    return rows


def model_names() -> list[str]:
    return sorted({row.model for row in PRETRAINED.values()})


def _unknown_name(model: str) -> str:
    close = difflib.get_close_matches(model, model_names(), n=5, cutoff=0.5)
    return (f"no pretrained checkpoint named {model!r}; closest: {', '.join(close) or 'none'} "
            "(clip_jax.list_pretrained() lists them all)")


def tags_of(model: str) -> list[str]:
    return [row.tag for row in list_pretrained(model)]


def get_pretrained(model: str, tag: str | None = None) -> Pretrained:
    """The row of (model, tag); tag may be left out when the model has one.  Errors list
    the model's valid tags, or the closest names."""
    tags = tags_of(model)
    if tag is None:
        if len(tags) == 1:
            return PRETRAINED[(model, tags[0])]
        raise ValueError(f"{model} has {len(tags)} pretrained tags; name one: {', '.join(tags)} "
                         f"(e.g. load_pretrained({model!r}, {tags[0]!r}) or {model}:{tags[0]})")
    if (model, tag) not in PRETRAINED:
        raise ValueError(f"{model} has no pretrained tag {tag!r}; valid tags: {', '.join(tags)}")
    return PRETRAINED[(model, tag)]


def is_model_name(name: str) -> bool:
    return any(row.model == name for row in PRETRAINED.values())


def _describe(p: Preprocessing) -> str:
    stats = "mean/std 0.5" if p.mean == (0.5, 0.5, 0.5) and p.std == (0.5, 0.5, 0.5) else "CLIP mean/std"
    return f"{p.resize}, {p.interpolation}, {stats}"


def markdown_tags(rows: Iterable[Pretrained] | None = None) -> str:
    """Model names and their tags as a Markdown table (docs/pretrained.md holds this output):
    one line per name, activation and preprocessing."""
    groups: dict[tuple, list[str]] = {}
    for row in rows if rows is not None else PRETRAINED.values():
        groups.setdefault((row.model, row.architecture, row.act, _describe(row.preprocessing)), []).append(row.tag)
    lines = ["| name | architecture | tags | activation | preprocessing |", "|---|---|---|---|---|"]
    for (model, architecture, act, transform), tags in groups.items():
        lines.append(f"| {model} | {architecture} | {', '.join(f'`{t}`' for t in tags)} | {act} | {transform} |")
    return "\n".join(lines) + "\n"
