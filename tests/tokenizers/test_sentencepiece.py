"""SigLIP's and SigLIP 2's SentencePiece tokenizers against transformers' classes loading
the same (test-trained) model files, on 10,000 varied strings, padded to 64 as the models
were trained; and the errors for a tokenizer that does not fit the model."""
import dataclasses
import random

import numpy as np
import pytest

import clip_jax
from clip_jax.tokenizers import from_spec, load_tokenizer
from clip_jax.tokenizers.sentencepiece import SentencePieceTokenizer
from tests.helpers.siglip import train_sentencepiece
from tests.helpers.text import varied_strings

transformers = pytest.importorskip("transformers")

SPECIAL_TEXT = ("</s>", "<unk>", "<pad>", "<eos>", "<bos>")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    return {kind: train_sentencepiece(folder, kind) for kind in ("siglip", "gemma")}


def siglip_strings(count: int) -> list[str]:
    """CLIP's varied strings plus what SigLIP's canonicalisation and lower-casing meet:
    capitals of every script (a final capital sigma), '▁' itself, punctuation runs, tabs."""
    rs = random.Random(1)
    extra = ["ΟΔΟΣ ΑΣ", "İstanbul ǅ ß ẞ", "\u2581word \u2581", "Hello,   World!!!", "a.b,c;d", "TAB\tTAB",
             "MIXED Case Words", "'quoted' \"double\" (paren) [bracket] {brace}", "   leading and trailing   "]
    pools = ["ABCDEFGHIJKLMNOPQRSTUVWXYZ", "ΑΒΓΔΣΩ АБВГДЖЯ", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", " \t\u00a0\u2581",
             "abcdefghij", "0123456789"]
    while len(extra) < count // 10:
        extra.append("".join(rs.choice(rs.choice(pools)) for _ in range(rs.randint(1, 60))))
    strings = varied_strings(count - len(extra), seed=3) + extra
    return [s for s in strings if not any(t in s.lower() for t in SPECIAL_TEXT)][:count]


def mismatches(ours, theirs, strings):
    return [(s, a[:12].tolist(), b[:12].tolist()) for s, a, b in zip(strings, ours, theirs) if not np.array_equal(a, b)]


def test_siglip_tokenizer_matches_transformers_on_10000_strings(model_files):
    strings = siglip_strings(10_000)
    assert len(strings) >= 9_900
    ours = SentencePieceTokenizer(model_files["siglip"], "siglip", 64)(strings)
    reference = transformers.SiglipTokenizer(model_files["siglip"])
    theirs = reference(strings, padding="max_length", truncation=True, max_length=64, return_tensors="np")["input_ids"]
    bad = mismatches(ours, theirs, strings)
    assert not bad, f"{len(bad)} of {len(strings)} differ, e.g. {bad[:3]!r}"
    assert ours.shape == (len(strings), 64) and ours.dtype == np.int32
    assert (ours[:, -1] == 1).all()  # truncated rows end in EOS, the others in padding, which is EOS (1) too


def test_gemma_tokenizer_matches_transformers_on_10000_strings(model_files):
    """SigLIP 2: transformers' GemmaTokenizerFast as the SigLIP 2 folders configure it
    (no BOS, EOS appended, padding on the right), on lower-cased text: SigLIP 2 was trained on lower-cased text,
    which transformers 4.x's Gemma tokenizer does not do itself."""
    strings = siglip_strings(10_000)
    ours = SentencePieceTokenizer(model_files["gemma"], "gemma", 64)(strings)
    lowered = [s.lower() for s in strings]
    options = dict(padding="max_length", truncation=True, max_length=64, return_tensors="np")
    gemma = dict(vocab_file=model_files["gemma"], add_bos_token=False, add_eos_token=True, padding_side="right")
    fast = transformers.GemmaTokenizerFast(**gemma)
    bad = mismatches(ours, fast(lowered, **options)["input_ids"], strings)
    assert not bad, f"{len(bad)} of {len(strings)} differ from GemmaTokenizerFast, e.g. {bad[:3]!r}"
    slow = transformers.GemmaTokenizer(**gemma)
    bad = mismatches(ours[:2000], slow(lowered[:2000], **options)["input_ids"], strings[:2000])
    assert not bad, f"{len(bad)} of 2000 differ from GemmaTokenizer, e.g. {bad[:3]!r}"
    assert fast.pad_token_id == 0 and fast.eos_token_id == 1
    assert ours[0, 0] == 1 and not ours[0, 1:].any()  # "" -> EOS, then <pad> (0)


def test_padding_truncation_and_special_text(model_files):
    for kind, pad in (("siglip", 1), ("gemma", 0)):
        tokenizer = SentencePieceTokenizer(model_files[kind], kind, 16)
        long = tokenizer(["word " * 100])[0]
        assert long.shape == (16,) and long[-1] == 1 and (long[:-1] != 1).all()  # truncated, EOS kept last
        short = tokenizer(["a cat"])[0]
        eos = int(np.argmax(short == 1))
        assert 0 < eos < 15 and (short[eos + 1:] == pad).all()
        # Literal special-token text is ordinary text: one EOS, at the end of the caption.
        row = tokenizer(["a </s> <eos> b"])[0]
        assert (row[: int(np.argmax(row == 1)) + 1] == 1).sum() == 1
    siglip = SentencePieceTokenizer(model_files["siglip"], "siglip", 64)
    np.testing.assert_array_equal(siglip(["Hello, World!"]), siglip(["hello world"]))  # canonicalised
    gemma = SentencePieceTokenizer(model_files["gemma"], "gemma", 64)
    np.testing.assert_array_equal(gemma(["A PHOTO"]), gemma(["a photo"]))
    assert not np.array_equal(gemma(["a photo."]), gemma(["a photo"]))  # Gemma keeps punctuation


def test_load_tokenizer_from_folder_and_errors(tmp_path, model_files):
    import shutil

    model = clip_jax.create_model("tiny-siglip")  # vocabulary 1000, context 16, "siglip" kind
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(model_files["siglip"], folder / "spiece.model")
    tokenizer = load_tokenizer(model, str(folder))
    assert tokenizer(["a cat"]).shape == (1, 16)
    np.testing.assert_array_equal(tokenizer(["a cat"]), load_tokenizer(model, model_files["siglip"])(["a cat"]))
    assert load_tokenizer(clip_jax.create_model("tiny-vit"))(["a cat"]).shape == (1, 77)  # CLIP: BPE, no file
    with pytest.raises(ValueError, match="does not ship with clip_jax: pass the path of its spiece.model"):
        load_tokenizer(model)
    with pytest.raises(ValueError, match=r"no spiece.model .* SentencePiece files present: none"):
        load_tokenizer(model, str(tmp_path))
    bigger = dataclasses.replace(model.config, text=dataclasses.replace(model.config.text, vocab_size=32000))
    with pytest.raises(ValueError, match="vocabulary of 1000 tokens but the model's is 32000"):
        load_tokenizer(bigger, str(folder))
    gemma_model = dataclasses.replace(model.config, text=dataclasses.replace(model.config.text, tokenizer="gemma"))
    with pytest.raises(ValueError, match="no tokenizer.model"):
        load_tokenizer(gemma_model, str(folder))
    with pytest.raises(ValueError, match="lacks"):  # a Gemma-kind tokenizer needs <eos> and <pad>
        SentencePieceTokenizer(model_files["siglip"], "gemma")
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        SentencePieceTokenizer(str(tmp_path / "junk.model"), "siglip")
    assert from_spec(f"gemma:{model_files['gemma']}", 64)(["x"]).shape == (1, 64)
