"""Tokenizers: CLIP's BPE (bpe.py) and SigLIP's SentencePiece models (sentencepiece.py).

`load_tokenizer(model, path)` gives the tokenizer a model was trained with, as a callable
`texts -> int32 [N, context_length]`: CLIP's BPE ships with clip_jax; a SigLIP model
needs its SentencePiece file (`spiece.model`, SigLIP 2: `tokenizer.model`), or the
Hugging Face folder holding it, and the file's vocabulary must be the model's.

Configs and the data pipeline name tokenizers by a spec string (`from_spec`): "bpe",
"siglip:PATH" or "gemma:PATH" (PATH a SentencePiece file or a folder holding one), or
"sentencepiece:PATH" (any SentencePiece model as it is, for a vocabulary of one's own).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from clip_jax.pretrained.locate import locate
from clip_jax.tokenizers.bpe import tokenize as bpe_tokenize
from clip_jax.tokenizers.sentencepiece import KINDS, SentencePieceTokenizer

# SentencePiece file names in Hugging Face folders, per tokenizer kind.
MODEL_FILES = {"siglip": "spiece.model", "gemma": "tokenizer.model", "sentencepiece": "tokenizer.model"}
Tokenizer = Callable[[Sequence[str]], np.ndarray]


class BPE:
    """CLIP's BPE at a context length, as a tokenizer object (`vocab_size`, `kind`)."""

    kind = "bpe"
    vocab_size = 49408

    def __init__(self, context_length: int = 77):
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        return bpe_tokenize(texts, context_length=self.context_length, truncate=True)

    def __repr__(self):
        return f"BPE(context_length={self.context_length})"


def local_path(path: str) -> str:
    """A local path for `path`: itself, or the cached folder or file of a checkpoint spec
    (hf-hub:ORG/NAME, a pretrained NAME:TAG), fetched when needed."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.exists(path):
        return path
    try:
        return locate(path).path
    except FileNotFoundError:
        return path  # not a spec either: the caller's error names the path


def model_file(kind: str, path: str) -> str:
    """The SentencePiece file of a `kind` tokenizer at `path` (the file, or a folder holding
    it, or a checkpoint spec whose folder holds it)."""
    path = local_path(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, MODEL_FILES[kind])
        if not os.path.exists(candidate):
            present = sorted(f for f in os.listdir(path) if f.endswith(".model"))
            raise ValueError(f"{path}: no {MODEL_FILES[kind]} (the {kind!r} tokenizer's SentencePiece model) in this "
                             f"folder; SentencePiece files present: {present or 'none'}")
        return candidate
    if not os.path.exists(path):
        raise ValueError(f"no SentencePiece model at {path!r} (the {kind!r} tokenizer's file, or a folder holding "
                         f"{MODEL_FILES[kind]})")
    return path


def from_spec(spec: str, context_length: int) -> Tokenizer:
    """The tokenizer a spec string names: "bpe", "siglip:PATH", "gemma:PATH" or "sentencepiece:PATH"."""
    if spec == "bpe":
        return BPE(context_length)
    kind, _, path = spec.partition(":")
    if kind in KINDS and path:
        return SentencePieceTokenizer(model_file(kind, path), kind, context_length)
    raise ValueError(f"tokenizer {spec!r} unknown; valid: 'bpe', 'siglip:PATH', 'gemma:PATH' or 'sentencepiece:PATH' "
                     "(PATH a SentencePiece model file or a Hugging Face folder holding one)")


def check_vocabulary(tokenizer, config) -> None:
    """A tokenizer whose vocabulary is not the model's would feed it wrong (or out-of-range) ids."""
    if tokenizer.vocab_size != config.text.vocab_size:
        source = getattr(tokenizer, "model_file", tokenizer)
        raise ValueError(f"tokenizer {source} has a vocabulary of {tokenizer.vocab_size} tokens but the model's is "
                         f"{config.text.vocab_size}; use the tokenizer the checkpoint was trained with")


def load_tokenizer(model_or_config, path: str | None = None) -> Tokenizer:
    """The tokenizer `model` (or its config) was trained with, padding to its context length.

    CLIP models: CLIP's BPE (`path` is not needed and ignored).  SigLIP models: the
    SentencePiece model at `path` (a file, or a folder with spiece.model / tokenizer.model),
    of the kind the config names; an error when the file's vocabulary is not the model's."""
    config = getattr(model_or_config, "config", model_or_config)
    kind, context_length = config.text.tokenizer, config.text.context_length
    if kind == "bpe":
        return BPE(context_length)
    if path is None:
        raise ValueError(f"this model uses the {kind!r} SentencePiece tokenizer, which does not ship with clip_jax: "
                         f"pass the path of its {MODEL_FILES[kind]} or of the Hugging Face folder holding it")
    tokenizer = SentencePieceTokenizer(model_file(kind, path), kind, context_length)
    check_vocabulary(tokenizer, config)
    return tokenizer


def resolve(model_or_config, given=None) -> Tokenizer:
    """A tokenizer for `model` from what a caller gave: None (the model's own when it ships
    with clip_jax), a callable, a spec string ("bpe", "siglip:PATH", ...) or a path.

    A model trained with a SentencePiece tokenizer takes only that kind, with its
    vocabulary; a BPE model also takes another tokenizer (a vocabulary of one's own)."""
    config = getattr(model_or_config, "config", model_or_config)
    if given is None or callable(given):
        return given if given is not None else load_tokenizer(config)
    given = os.fspath(given)
    kind = "bpe" if given == "bpe" else given.partition(":")[0]
    if kind not in ("bpe",) + KINDS:
        return load_tokenizer(config, given)
    bundled = config.text.tokenizer == "bpe"
    if not bundled and kind != config.text.tokenizer:
        raise ValueError(f"tokenizer {given!r} is a {kind!r} tokenizer but the model was trained with the "
                         f"{config.text.tokenizer!r} one")
    tokenizer = from_spec(given, config.text.context_length)
    if not bundled:
        check_vocabulary(tokenizer, config)
    return tokenizer


def for_checkpoint(model_or_config, checkpoint: str | None, given=None) -> Tokenizer:
    """The tokenizer for a model loaded from `checkpoint`: `given` when there is one (see
    `resolve`); else the model's own, which for a SentencePiece model is the file in the
    checkpoint's folder (Hugging Face folders hold it; a checkpoint file's folder is looked in)."""
    config = getattr(model_or_config, "config", model_or_config)
    if given is not None or config.text.tokenizer == "bpe":
        return resolve(config, given)
    if not checkpoint:
        return load_tokenizer(config)  # the error naming the file to pass
    checkpoint = local_path(checkpoint)
    return load_tokenizer(config, checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or ".")
