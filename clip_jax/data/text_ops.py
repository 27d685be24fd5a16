"""Tokenisation inside the tf.data graph, for whole batches of captions.

`tokenizer` is a spec string of clip_jax.tokenizers.from_spec: "bpe" (CLIP's BPE, ids
identical to clip_jax.tokenize because it calls the same tokenizer), "siglip:PATH" /
"gemma:PATH" (SigLIP's and SigLIP 2's SentencePiece tokenizers) or "sentencepiece:PATH"
(any SentencePiece model: its ids, cut to context_length - 1, then EOS if the model has
one, zero padded).

Both run as one tf.numpy_function per *batch*: the per-call overhead (~50 us) is paid
once per batch, not per caption, and the BPE cache is shared by all batches of the
process.  They hold the GIL, so tokenisation runs on one core at a time: about 4-8k
captions/s for BPE on this project's dev VM (bench/tokenizer.py), far more than the
image decode rate per core, so it is not the bottleneck (bench/data_pipeline.py).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from clip_jax import tokenizers


def python_tokenizer(name: str, context_length: int) -> Callable[[list[str]], np.ndarray]:
    """The plain Python tokenizer named by `name` (the reference for the graph version)."""
    path = name.partition(":")[2]
    if "://" in path:
        raise ValueError(f"tokenizer {name!r}: SentencePiece models are read from local paths; copy {path!r} here")
    return tokenizers.from_spec(name, context_length)


def graph_tokenizer(name: str, context_length: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """tf.string [B] -> tf.int32 [B, context_length], for use inside Dataset.map."""
    encode = python_tokenizer(name, context_length)

    def encode_bytes(captions: np.ndarray) -> np.ndarray:
        return encode([c.decode("utf-8", errors="replace") for c in captions.reshape(-1)])

    def tokenize(captions: tf.Tensor) -> tf.Tensor:
        tokens = tf.numpy_function(encode_bytes, [captions], tf.int32, stateful=False)
        return tf.ensure_shape(tokens, [captions.shape[0], context_length])

    return tokenize
