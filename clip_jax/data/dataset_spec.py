"""Dataset spec strings: parsing, brace/glob expansion and the errors for bad ones.

One string names a dataset everywhere (training, evaluation, tools):

    SPEC    := SOURCE ( '+' SOURCE )*         several sources, mixed by weight
    SOURCE  := KIND ':' TARGET [ '?' OPTIONS ] [ '@' WEIGHT ]
    OPTIONS := key=value ( '&' key=value )*

    wds:/data/laion-{00000..00099}.tar        WebDataset tar shards (brace ranges, globs, gs://)
    tfrecord:/data/train-*.tfrecord           tf.train.Example records
    tfds:coco_captions:train                  any TFDS image-text or image-label dataset
    tfds:cifar10:test?data_dir=/data/tfds     (split defaults to "train")
    folder:/data/imagenet/val                 one subfolder per class
    csv:/data/pairs.csv?image=filepath&caption=title   (default columns: image, caption)
    demo:train   demo:val   demo:heldout      synthetic, generated on the fly (clip_jax.data.demo)
    wds:/a/{000..099}.tar@0.7+wds:/b/{000..009}.tar@0.3   a 70/30 mixture

A '+' separates sources only when the next source's kind follows it, so TFDS split
arithmetic such as `tfds:mnist:train+test` keeps its meaning.  Weights default to 1 and are
normalised.  A TARGET that names no existing file is a ValueError at parse time.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import tensorflow as tf

KINDS = ("wds", "tfrecord", "tfds", "folder", "csv", "demo")

_SPLIT_SOURCES = re.compile(r"\+(?=(?:%s):)" % "|".join(KINDS))
_WEIGHT = re.compile(r"@([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One parsed source: kind, target (path, TFDS name or demo split), options, weight."""

    kind: str
    target: str
    options: Mapping[str, str]
    weight: float
    text: str  # the source as written, for error messages


def parse(spec: str) -> list[SourceSpec]:
    """Split a spec string into sources; raises ValueError naming what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"dataset spec must be a non-empty string like 'wds:/path/shards-{{00000..00099}}.tar'; got {spec!r}"
        )
    sources = [_parse_source(part.strip(), spec) for part in _SPLIT_SOURCES.split(spec.strip())]
    return sources


def _parse_source(text: str, whole: str) -> SourceSpec:
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(
            f"dataset spec {whole!r}: source {text!r} must start with one of "
            f"{', '.join(k + ':' for k in KINDS)} (e.g. 'wds:/data/shards-{{00000..00099}}.tar')"
        )
    weight = 1.0
    match = _WEIGHT.search(rest)
    if match:
        weight = float(match.group(1))
        rest = rest[: match.start()]
        if weight <= 0:
            raise ValueError(f"dataset spec {whole!r}: weight of {text!r} must be positive, got {weight}")
    options: dict[str, str] = {}
    if "?" in rest:
        rest, query = rest.split("?", 1)
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ValueError(f"dataset spec {whole!r}: option {item!r} must look like key=value")
            options[key] = value
    if not rest:
        raise ValueError(f"dataset spec {whole!r}: source {text!r} has nothing after '{kind}:'")
    return SourceSpec(kind=kind, target=rest, options=options, weight=weight, text=text)


def expand_braces(pattern: str) -> list[str]:
    """'a-{00..02}.tar' -> ['a-00.tar', 'a-01.tar', 'a-02.tar'] (zero padding kept; nested ranges multiply)."""
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    if int(last) < int(first):
        raise ValueError(f"brace range {match.group(0)!r} in {pattern!r} runs backwards")
    width = len(first)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        expanded
        for number in range(int(first), int(last) + 1)
        for expanded in expand_braces(f"{head}{number:0{width}d}{tail}")
    ]


def expand_paths(target: str, spec_text: str) -> list[str]:
    """Brace ranges, then globs, against the file system (local or gs:// via tf.io.gfile).

    Returns the paths in sorted order; raises ValueError if a literal path does not
    exist or a pattern matches nothing, naming the spec.
    """
    paths: list[str] = []
    for candidate in expand_braces(target):
        if _GLOB_CHARS.search(candidate):
            matched = sorted(tf.io.gfile.glob(candidate))
            if not matched:
                raise ValueError(f"dataset spec {spec_text!r}: the pattern {candidate!r} matches no file")
            paths.extend(matched)
        else:
            paths.append(candidate)
    missing = [p for p in paths if not tf.io.gfile.exists(p)]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(
            f"dataset spec {spec_text!r}: {len(missing)} of {len(paths)} paths do not exist: {shown}. "
            "Valid targets are existing files, brace ranges like shards-{00000..00099}.tar or globs like *.tar"
        )
    return paths
