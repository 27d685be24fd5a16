"""The CLIP BPE tokenizer against the spec's test vectors and open_clip's tokenizer."""
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_jax import tokenize
from clip_jax.tokenizers.bpe import VOCAB_PATH, BPETokenizer, default_tokenizer
from tests.helpers.text import varied_strings

SPEC_VECTORS = {  # OpenAI's tokenizer on these strings: ids including SOT/EOT
    "Hello World!": [49406, 3306, 1002, 256, 49407],
    "a diagram": [49406, 320, 22697, 49407],
    "a dog": [49406, 320, 1929, 49407],
    "a cat": [49406, 320, 2368, 49407],
    "a photo of a cat.": [49406, 320, 1125, 539, 320, 2368, 269, 49407],
    "You should've done this": [49406, 592, 1535, 1200, 1700, 589, 49407],
    "you're, don't, her's": [49406, 592, 982, 267, 847, 713, 267, 899, 568, 49407],
    "2021-03-01 12:34": [49406, 273, 271, 273, 272, 268, 271, 274, 268, 271, 272, 272, 273, 281, 274, 275, 49407],
    "Tom &amp; Jerry": [49406, 2435, 261, 9164, 49407],
    "<b>Tom &amp; Jerry</b>": [49406, 283, 321, 285, 2435, 261, 9164, 34308, 321, 285, 49407],
    "cafÃ© mojibake": [49406, 15304, 617, 3252, 11878, 49407],
    "naïve café": [49406, 1097, 35689, 563, 15304, 49407],
    "東京タワー": [49406, 48338, 21078, 105, 34941, 2429, 107, 30391, 49407],
    "a bad photo of a kite (bird of prey).": [
        49406,
        320,
        2103,
        1125,
        539,
        320,
        19867,
        263,
        3329,
        539,
        17131,
        1818,
        49407,
    ],
    '!"!': [49406, 0, 10377, 49407],
}


@pytest.mark.parametrize("text", sorted(SPEC_VECTORS))
def test_spec_vectors(text):
    ids = SPEC_VECTORS[text]
    row = tokenize([text])[0]
    assert row.dtype == np.int32 and row.shape == (77,)
    assert row[: len(ids)].tolist() == ids
    assert not row[len(ids) :].any()


def test_vocabulary_facts():
    with open(VOCAB_PATH, "rb") as f:
        assert (
            hashlib.sha256(f.read()).hexdigest() == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
        )
    tok = default_tokenizer()
    assert tok.vocab_size == 49408
    assert len(tok.merge_ranks) == 48894
    assert tok.decoder[0] == "!" and tok.decoder[256] == "!</w>" and tok.decoder[512] == "in"
    assert tok.decoder[49405] == "jekyll</w>"
    assert (tok.sot_id, tok.eot_id) == (49406, 49407)


def test_truncation_keeps_eot_last():
    text = " ".join(["word"] * 100)
    row = tokenize(text, truncate=True)[0]
    assert row[0] == 49406 and row[-1] == 49407
    assert (row[1:-1] == default_tokenizer().encode("word")[0]).all()


def test_no_truncation_raises_naming_text():
    with pytest.raises(ValueError, match="word word"):
        tokenize(" ".join(["word"] * 100), truncate=False)


def test_exactly_77_tokens_fit_without_truncation():
    row = tokenize(" ".join(["word"] * 75), truncate=False)[0]
    assert row[-1] == 49407 and row[-2] != 49407


def test_shorter_context_and_empty_string():
    assert tokenize("", context_length=5).tolist() == [[49406, 49407, 0, 0, 0]]


def test_bad_inputs():
    with pytest.raises(TypeError, match="item 1"):
        tokenize(["ok", 3])
    with pytest.raises(ValueError, match="context_length"):
        tokenize("x", context_length=1)


def test_decode_roundtrip():
    tok = BPETokenizer()
    assert tok.decode(tok.encode("a photo of a cat.")).strip() == "a photo of a cat ."


def test_identical_to_open_clip_on_10000_varied_strings():
    open_clip = pytest.importorskip("open_clip")
    reference = open_clip.get_tokenizer("ViT-B-32")
    strings = varied_strings(10_000)
    ours = tokenize(strings)
    theirs = reference(strings).numpy()
    mismatched = [s for s, a, b in zip(strings, ours, theirs) if not np.array_equal(a, b)]
    assert not mismatched, f"{len(mismatched)} differ, e.g. {mismatched[:3]!r}"


def test_literal_special_token_text_is_ordinary_text():
    """A caption containing "<|endoftext|>" must not inject an EOT id (it would move
    the EOT pooling position); open_clip behaves the same way."""
    row = tokenize("a <|endoftext|> b")[0]
    assert (row == 49407).sum() == 1 and (row == 49406).sum() == 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(), max_size=400))
def test_random_unicode_never_crashes_the_tokenizer(text):
    row = tokenize(text)[0]
    assert row[0] == 49406
    end = int(np.argmax(row == 49407))
    assert row[end] == 49407 and not row[end + 1 :].any()
    assert row.min() >= 0 and row.max() <= 49407
