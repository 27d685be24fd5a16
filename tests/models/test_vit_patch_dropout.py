"""FLIP's patch dropout: only in training, keeps the class token and the requested
fraction of patches, and the trainer's unmasked tuning phase turns it off."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clip_jax
from clip_jax.models.vit import drop_patches
from tests.helpers.oracles import random_inputs


def test_drop_patches_keeps_class_token_and_order():
    tokens = jnp.arange(2 * 17 * 1, dtype=jnp.float32).reshape(2, 17, 1)
    kept = drop_patches(tokens, 0.5, jax.random.PRNGKey(0))
    assert kept.shape == (2, 9, 1)
    for row in range(2):
        values = np.asarray(kept[row, :, 0])
        assert values[0] == tokens[row, 0, 0]  # class token first
        assert np.all(np.diff(values) > 0)  # original order, no repeats
    other = drop_patches(tokens, 0.5, jax.random.PRNGKey(1))
    assert not np.array_equal(np.asarray(kept), np.asarray(other))


def test_only_in_training_and_rate_zero_is_plain():
    plain = clip_jax.create_model("tiny-vit")
    dropping = clip_jax.create_model("tiny-vit", patch_dropout=0.5)
    variables = clip_jax.init_variables(plain)
    images, _ = random_inputs(plain.config)
    encode = lambda m, train, rng=None: m.apply(variables, images, train=train,  # noqa: E731
                                                rngs={"patch_dropout": jax.random.PRNGKey(rng or 0)},
                                                method=m.encode_image)
    np.testing.assert_allclose(encode(dropping, False), encode(plain, False), atol=1e-6)
    np.testing.assert_allclose(encode(plain, True), encode(plain, False), atol=1e-6)
    assert np.abs(np.asarray(encode(dropping, True)) - np.asarray(encode(plain, False))).max() > 1e-3
    with pytest.raises(ValueError, match="patch_dropout"):
        clip_jax.create_model("tiny-vit", patch_dropout=1.0)


def test_trainer_runs_masked_then_unmasked(tmp_path, caplog):
    import logging

    from clip_jax.trainer import train
    from tests.helpers.training import synthetic_data, tiny_config

    caplog.set_level(logging.INFO)
    config = tiny_config(total_steps=4, patch_dropout=0.5, patch_dropout_unmasked_steps=1)
    state = train(config, str(tmp_path), synthetic_data)
    assert int(state.step) == 4
    assert "patch dropout off from step 4" in caplog.text
