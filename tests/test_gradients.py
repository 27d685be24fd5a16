"""Embedding-cache accumulation gives the unaccumulated loss and gradients."""
import jax
import numpy as np
import pytest

from clip_jax.gradients import make_grad_fn
from clip_jax.sharding import global_batch
from clip_jax.trainer import build, train
from tests.helpers.training import SyntheticIterator, synthetic_data, tiny_config


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
@pytest.mark.parametrize("steps", [2, 4])
def test_accumulated_equals_plain(loss, steps):
    setup = build(tiny_config(batch_size=32, mesh=(("data", 4), ("fsdp", 2)), loss=loss))
    state = setup.init_state(jax.random.key(0, impl="rbg"))
    batch = global_batch(next(SyntheticIterator(32, 32)), setup.mesh)
    rng = jax.random.PRNGKey(3)
    plain = jax.jit(make_grad_fn(setup.model, loss, setup.mesh, 1))(state.params, state.batch_stats, batch, rng)
    accumulated = jax.jit(make_grad_fn(setup.model, loss, setup.mesh, steps))(
        state.params, state.batch_stats, batch, rng)
    assert abs(float(plain[0]) - float(accumulated[0])) <= 1e-5
    for key in plain[1]:
        assert float(plain[1][key]) == pytest.approx(float(accumulated[1][key]))
    flat_plain = jax.tree_util.tree_flatten_with_path(plain[3])[0]
    flat_acc = dict(jax.tree_util.tree_flatten_with_path(accumulated[3])[0])
    for path, value in flat_plain:
        np.testing.assert_allclose(np.asarray(flat_acc[path]), np.asarray(value), atol=1e-5, err_msg=str(path))


def test_trainer_with_accumulation(tmp_path):
    state = train(tiny_config(total_steps=3, accumulation_steps=2), str(tmp_path), synthetic_data)
    assert int(state.step) == 3


def test_accumulation_must_divide_the_batch():
    with pytest.raises(ValueError, match="accumulation_steps 3"):
        build(tiny_config(accumulation_steps=3))
