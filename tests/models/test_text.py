"""clip_jax.models.text: trimming tokens after the last EOT gives the same features."""
import numpy as np


def test_trimmed_text_gives_the_same_features():
    from clip_jax import create_model, encode_text, tokenize
    from clip_jax.inference import init_variables
    from clip_jax.models.text import trim_after_eot

    model = create_model("tiny-vit")
    variables = init_variables(model, seed=1)
    short = tokenize(["a photo of a dog.", "a cat", "a tiny red square on a blue background"])
    trimmed = trim_after_eot(short)
    assert trimmed.shape == (3, 16)  # longest is 10 tokens with SOT/EOT, rounded up to 16
    full = np.asarray(encode_text(model, variables, short, trim=False))
    np.testing.assert_allclose(np.asarray(encode_text(model, variables, short)), full, rtol=1e-5, atol=1e-6)
    # A row that uses the whole context keeps every column.
    long = tokenize(["word " * 200], truncate=True)
    assert trim_after_eot(np.concatenate([short, long])).shape[1] == 77
    # Id 0 is a real token ("!"), not padding: trimming follows the EOT, not zeros.
    bangs = tokenize(["! " * 20])  # 20 tokens of id 0 between SOT and EOT
    assert trim_after_eot(bangs).shape[1] == 32
