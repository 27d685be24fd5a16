"""SigLIP's SentencePiece tokenizers, id for id as transformers' classes produce them.

Two kinds, named by the model config's `text.tokenizer`:

* "siglip" (SigLIP, `spiece.model`; transformers' `SiglipTokenizer`): prefix "▁", lower-case
  character by character, drop ASCII punctuation, collapse whitespace, strip; encode with
  the model's dummy prefix turned off (an "<unk>" is encoded first and its ids dropped, so
  the first word keeps its word-start piece); append "</s>"; pad with "</s>".
* "gemma" (SigLIP 2, `tokenizer.model`; transformers' `GemmaTokenizerFast` with
  add_bos_token=False, add_eos_token=True): lower-case (SigLIP 2 was trained on lower-cased
  text: big_vision's `lower` op, transformers' `Siglip2Tokenizer`; the `GemmaTokenizerFast`
  of transformers 4.x does not lower-case), encode, append "<eos>", pad with "<pad>".

A third kind, "sentencepiece", is any SentencePiece model used as it is (for training a
model on a vocabulary of one's own): its ids, EOS when the model defines one, zero padding.

Every row is padded to the full context length (64 for the published models), as the
models were trained: their text tower reads the last position and has no padding mask,
so a shorter row is a different input.  Over-long texts keep their first ids and the
EOS in the last slot.

Text that spells a special token ("</s>", "<eos>", ...) is ordinary text here: transformers
would turn it into the special id, which would end the caption early (the same choice
clip_jax makes for CLIP's "<|endoftext|>").
"""
from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np

KINDS = ("siglip", "gemma", "sentencepiece")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WORD_START = "\u2581"  # SentencePiece's "▁"


class SentencePieceTokenizer:
    """texts -> int32 [N, context_length] for one SentencePiece model file."""

    def __init__(self, model_file: str, kind: str, context_length: int = 64):
        import sentencepiece

        if kind not in KINDS:
            raise ValueError(f"unknown SentencePiece tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (a token and EOS), got {context_length}")
        self.model_file, self.kind, self.context_length = model_file, kind, context_length
        with open(model_file, "rb") as f:
            proto = f.read()
        plain = sentencepiece.SentencePieceProcessor()
        try:
            plain.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as error:
            raise ValueError(f"{model_file}: not a SentencePiece model ({error})") from None
        self.vocab_size = plain.get_piece_size()
        self._processor = plain
        if kind == "siglip":
            self._processor = _without_dummy_prefix(proto)
            self.eos_id = self.pad_id = self._piece_id(plain, "</s>")
            self._unk_prefix = "<unk>"
            self._unk_length = len(self._processor.encode(self._unk_prefix))
        elif kind == "gemma":
            self.eos_id = self._piece_id(plain, "<eos>")
            self.pad_id = self._piece_id(plain, "<pad>")
        else:
            self.eos_id = plain.eos_id() if plain.eos_id() >= 0 else None
            self.pad_id = 0

    def _piece_id(self, processor, piece: str) -> int:
        index = processor.piece_to_id(piece)
        if processor.id_to_piece(index) != piece:
            raise ValueError(f"{self.model_file}: a {self.kind!r} tokenizer needs the piece {piece!r}, which this "
                             "SentencePiece model lacks")
        return index

    def encode(self, text: str) -> list[int]:
        """The ids of one text, without EOS or padding."""
        if self.kind == "gemma":
            return self._processor.encode(text.lower())
        if self.kind == "sentencepiece":
            return self._processor.encode(text)
        text = _WORD_START + text.replace(_WORD_START, " ")
        text = "".join(character.lower() for character in text)  # as transformers: one character at a time
        text = re.sub(r"\s+", " ", text.translate(_PUNCTUATION)).strip()
        ids = self._processor.encode(self._unk_prefix + text)
        return ids[self._unk_length:] if len(ids) >= self._unk_length else ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        result = np.full((len(texts), self.context_length), self.pad_id, np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings; item {row} is {type(text).__name__}: {text!r:.80}")
            ids = self.encode(text)
            if self.eos_id is None:
                ids = ids[: self.context_length]
            else:
                ids = ids[: self.context_length - 1] + [self.eos_id]
            result[row, : len(ids)] = ids
        return result

    def __repr__(self):
        return f"SentencePieceTokenizer({self.model_file!r}, kind={self.kind!r}, context_length={self.context_length})"


def _without_dummy_prefix(proto: bytes):
    """A processor of the serialized model with SentencePiece's dummy "▁" prefix off
    (transformers' SiglipTokenizer loads the model this way)."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto.FromString(proto)
    model.normalizer_spec.add_dummy_prefix = False
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model.SerializeToString())
    return processor
