"""Shared SigLIP test fixtures: small SentencePiece models trained in the test (the real
spiece.model / tokenizer.model cannot be downloaded), laid out like SigLIP's (a T5-style
unigram model: pad 0, </s> 1, <unk> 2) and SigLIP 2's (a Gemma-style byte-fallback BPE:
<pad> 0, <eos> 1, <bos> 2, <unk> 3, no dummy prefix, identity normalisation)."""
from __future__ import annotations

import os
import random

from tests.helpers.text import varied_strings

WORDS = ("a photo of the this is cat dog bird car plane ship truck horse frog deer red green blue yellow "
         "circle square triangle small large two three on left right background drawing close-up").split()


def corpus(lines: int = 1500, seed: int = 0) -> list[str]:
    rs = random.Random(seed)
    text = [" ".join(rs.choice(WORDS) for _ in range(rs.randint(3, 12))) for _ in range(lines)]
    text += [s.replace("\n", " ") for s in varied_strings(lines, seed=seed + 7)]
    return [line for line in text if line.strip()]


def train_sentencepiece(folder, kind: str, vocab_size: int = 1000) -> str:
    """A SentencePiece model file of `kind` ("siglip" or "gemma") with `vocab_size` pieces."""
    import sentencepiece

    prefix = os.path.join(str(folder), kind)
    common = dict(sentence_iterator=iter(corpus()), model_prefix=prefix, vocab_size=vocab_size, minloglevel=2,
                  character_coverage=0.9995)
    if kind == "siglip":
        sentencepiece.SentencePieceTrainer.train(model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                                 **common)
    else:
        sentencepiece.SentencePieceTrainer.train(
            model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
            bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
            normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            **common)
    return prefix + ".model"
