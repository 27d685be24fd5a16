"""CLIP's byte-level BPE tokenizer, reproducing OpenAI's `clip.tokenize` id for id.

Pipeline per text: ftfy repair -> html unescape (twice) -> whitespace collapse ->
lowercase -> pre-tokenise with CLIP's regex -> map UTF-8 bytes to printable
unicode symbols -> greedy lowest-rank BPE merges with an end-of-word marker on the
last symbol.  Each sequence is framed as [SOT] + ids + [EOT] and zero padded.

The vocabulary is built from the first 48,894 merges of OpenAI's
`bpe_simple_vocab_16e6.txt.gz`, shipped as package data.
"""
from __future__ import annotations

import functools
import gzip
import html
import os
from typing import Iterable, Sequence

import ftfy
import numpy as np
import regex

VOCAB_PATH = os.path.join(os.path.dirname(__file__), "bpe_simple_vocab_16e6.txt.gz")
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # 48,894: the merges OpenAI's vocabulary uses
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
PAD_ID = 0

# Contractions before letter runs so "should've" becomes "should" + "'ve"; every digit
# its own token.  OpenAI's pattern also matches the literal text "<|endoftext|>" as the
# EOT id; like open_clip we treat such text as ordinary characters, because an EOT id
# inside a caption would move the EOT pooling position.
_PRETOKEN_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


@functools.lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode symbols.

    Printable latin-1 bytes map to themselves; the rest are shifted above 255 so that
    no symbol is whitespace or a control character.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    # Order by byte value so that ids 0..255 follow the byte order of GPT-2's table.
    ordered = printable + [b for b in range(256) if b not in printable]
    return {b: mapping[b] for b in ordered}


# Printable ASCII plus ordinary whitespace, without '&' (html entities) and '\x1b'
# (terminal escapes): text ftfy provably leaves unchanged, so its cost can be skipped.
_FTFY_INERT = regex.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")


def clean_text(text: str) -> str:
    """ftfy, double html unescape, whitespace collapse, lowercase: CLIP's text cleaning."""
    if not _FTFY_INERT.fullmatch(text):
        text = ftfy.fix_text(text)
    if "&" in text:
        text = html.unescape(html.unescape(text))
    text = _WHITESPACE.sub(" ", text.strip()).strip()
    return text.lower()


class BPETokenizer:
    """Encodes text to CLIP BPE ids and back."""

    def __init__(self, vocab_path: str = VOCAB_PATH):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self._cache: dict[str, tuple[int, ...]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, pretoken: str) -> tuple[int, ...]:
        """Ids of one pre-token (already mapped to byte symbols), memoised."""
        cached = self._cache.get(pretoken)
        if cached is not None:
            return cached
        word = list(pretoken[:-1]) + [pretoken[-1] + "</w>"]
        ranks = self.merge_ranks
        while len(word) > 1:
            best_rank, best_pair = None, None
            for pair in zip(word, word[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_pair = rank, pair
            if best_pair is None:
                break
            first, second = best_pair
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = tuple(self.encoder[symbol] for symbol in word)
        self._cache[pretoken] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Content ids of `text`, without SOT/EOT."""
        ids: list[int] = []
        for pretoken in _PRETOKEN_PATTERN.findall(clean_text(text)):
            symbols = "".join(self.byte_encoder[b] for b in pretoken.encode("utf-8"))
            ids.extend(self._bpe(symbols))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` (end-of-word markers become spaces; invalid UTF-8 is replaced)."""
        symbols = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in symbols)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int = CONTEXT_LENGTH,
        truncate: bool = True,
    ) -> np.ndarray:
        """int32 [N, context_length] ids: SOT, content, EOT, zero padding.

        With `truncate=True` an over-long text keeps its first ids and EOT in the last
        slot (OpenAI's behaviour); with `truncate=False` it raises ValueError.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (SOT + EOT), got {context_length}")
        result = np.full((len(texts), context_length), PAD_ID, dtype=np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings; item {row} is {type(text).__name__}: {text!r:.80}")
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"Input {text!r:.200} is {len(ids)} tokens, too long for context length "
                        f"{context_length}; pass truncate=True to cut it"
                    )
                ids = ids[:context_length]
                ids[-1] = self.eot_id
            result[row, : len(ids)] = ids
        return result


@functools.lru_cache(maxsize=None)
def default_tokenizer() -> BPETokenizer:
    return BPETokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, truncate: bool = True) -> np.ndarray:
    """Tokenise with the shared CLIP BPE tokenizer; see `BPETokenizer.__call__`."""
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)
