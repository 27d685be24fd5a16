"""Tokenisation inside the tf.data graph, for whole batches of captions.

`tokenizer` is "bpe" (CLIP's BPE, ids identical to clip_jax.tokenize because it calls
the same tokenizer) or "sentencepiece:/path/to/model" (SigLIP-style: the model's ids,
cut to context_length - 1, then EOS if the model has one, zero padded).

Both run as one tf.numpy_function per *batch*: the per-call overhead (~50 us) is paid
once per batch, not per caption, and the BPE cache is shared by all batches of the
process.  They hold the GIL, so tokenisation runs on one core at a time: about 4-8k
captions/s for BPE on this project's dev VM (bench/tokenizer.py), far more than the
image decode rate per core, so it is not the bottleneck (bench/data_pipeline.py).
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from clip_jax.tokenizers.bpe import tokenize as bpe_tokenize


@functools.lru_cache(maxsize=None)
def _sentencepiece(model_path: str):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=model_path)


def sentencepiece_tokenize(texts, model_path: str, context_length: int) -> np.ndarray:
    """int32 [N, context_length]: ids (truncated), EOS when the model defines one, zeros."""
    processor = _sentencepiece(model_path)
    eos = processor.eos_id()
    result = np.zeros((len(texts), context_length), np.int32)
    for row, ids in enumerate(processor.encode(list(texts))):
        ids = ids[: context_length - 1] + [eos] if eos >= 0 else ids[:context_length]
        result[row, : len(ids)] = ids
    return result


def python_tokenizer(name: str, context_length: int) -> Callable[[list[str]], np.ndarray]:
    """The plain Python tokenizer named by `name` (the reference for the graph version)."""
    if name == "bpe":
        return functools.partial(bpe_tokenize, context_length=context_length, truncate=True)
    if name.startswith("sentencepiece:"):
        path = name.split(":", 1)[1]
        if not os.path.exists(path) and not tf.io.gfile.exists(path):
            raise ValueError(f"tokenizer {name!r}: no SentencePiece model at {path!r}")
        return functools.partial(sentencepiece_tokenize, model_path=path, context_length=context_length)
    raise ValueError(f"tokenizer must be 'bpe' or 'sentencepiece:/path/to/model', got {name!r}")


def graph_tokenizer(name: str, context_length: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """tf.string [B] -> tf.int32 [B, context_length], for use inside Dataset.map."""
    encode = python_tokenizer(name, context_length)

    def encode_bytes(captions: np.ndarray) -> np.ndarray:
        return encode([c.decode("utf-8", errors="replace") for c in captions.reshape(-1)])

    def tokenize(captions: tf.Tensor) -> tf.Tensor:
        tokens = tf.numpy_function(encode_bytes, [captions], tf.int32, stateful=False)
        return tf.ensure_shape(tokens, [captions.shape[0], context_length])

    return tokenize
