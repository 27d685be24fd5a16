"""clip_jax.trainer.train_step: the pure step, run on (state, batch) without a workdir
or the loop around it."""
import jax
import numpy as np
import optax
import pytest

from clip_jax.sharding import global_batch, path_string
from clip_jax.trainer import build, jit_train_step
from tests.helpers.training import SyntheticIterator, tiny_config


def run_steps(config, steps=None, poison_at=None):
    """(state, metrics of every step) of `steps` train steps (default: the config's)
    from a fresh state, on the synthetic data the trainer tests use."""
    setup = build(config)
    state = setup.init_state(jax.random.key(config.seed, impl="rbg"))
    data = SyntheticIterator(setup.local_batch_size, setup.model.config.vision.image_size, config.seed)
    data.poison_at = poison_at
    history = []
    for step in range(1, (steps or setup.total_steps) + 1):
        step_fn = jit_train_step(setup, setup.model_at(step))
        state, metrics = step_fn(state, global_batch(next(data), setup.mesh))
        history.append(jax.device_get(metrics))
    return setup, state, history


def flat_params(state):
    return {path_string(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}


def initial_params(config):
    setup = build(config)
    return flat_params(setup.init_state(jax.random.key(config.seed, impl="rbg")))


def test_a_step_reports_its_metrics_and_caps_the_temperature():
    config = tiny_config(total_steps=2, logit_scale_init=float(np.log(150.0)))
    _, state, history = run_steps(config)
    for key in ("loss", "i2t_accuracy", "t2i_accuracy", "logit_scale", "lr", "grad_norm", "nonfinite_updates"):
        assert key in history[-1], key
    assert int(state.step) == 2
    assert float(state.params["logit_scale"]) <= np.log(100.0) + 1e-6  # clamped after every update
    assert history[0]["lr"] == 0.0 and history[1]["lr"] > 0.0  # warm-up from zero


def test_a_nonfinite_step_is_counted_and_not_applied():
    """The skip mode's guarantee, at the step: the poisoned update is dropped, counted,
    and training goes on from the last finite state."""
    _, state, history = run_steps(tiny_config(total_steps=4, on_nonfinite="skip"), poison_at=2)
    assert int(state.nonfinite_count) == 1 and int(state.step) == 4
    assert int(state.first_nonfinite_step) == 3
    assert not np.isfinite(history[2]["loss"]) and np.isfinite(history[3]["loss"])
    assert all(np.isfinite(v).all() for v in flat_params(state).values())


def test_frozen_groups_are_not_trained_and_have_no_optimizer_state():
    config = tiny_config(total_steps=2, **{"optim.frozen": (r"^visual/",)})
    initial = initial_params(config)
    _, state, _ = run_steps(config)
    final = flat_params(state)
    assert all(np.array_equal(final[k], initial[k]) for k in final if k.startswith("visual/"))
    assert not np.array_equal(final["text/text_projection"], initial["text/text_projection"])
    state_paths = [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
    assert not any("visual" in p for p in state_paths)


def test_freezing_all_but_the_last_blocks_of_a_tower():
    config = tiny_config(total_steps=2, **{"optim.frozen": (r"^visual/(?!transformer/blocks/)",
                                                           r"^visual/transformer/blocks/@:1")})
    initial = initial_params(config)
    _, state, _ = run_steps(config)
    final = flat_params(state)
    kernel = "visual/transformer/blocks/attn/in_proj/kernel"
    assert np.array_equal(final[kernel][0], initial[kernel][0])  # block 0 frozen
    assert not np.array_equal(final[kernel][1], initial[kernel][1])  # the last block trains
    assert np.array_equal(final["visual/conv1/kernel"], initial["visual/conv1/kernel"])
    with pytest.raises(ValueError, match="REGEX@START:STOP"):
        build(tiny_config(**{"optim.frozen": ("^visual/@x",)}))


def test_ring_loss_trains_like_the_gathered_loss():
    """Three steps with the ring softmax loss land where the gathered loss lands."""
    mesh = (("data", 2), ("fsdp", 4))
    gathered = flat_params(run_steps(tiny_config(total_steps=3, mesh=mesh))[1])
    ring = flat_params(run_steps(tiny_config(total_steps=3, mesh=mesh, loss="softmax_ring"))[1])
    for key, value in gathered.items():
        # Adam normalises each update, so a parameter whose gradient is ~0 can move by
        # up to lr (1e-3) on float rounding alone; 1e-4 is a tenth of one such step.
        np.testing.assert_allclose(ring[key], value, atol=1e-4, err_msg=key)


def test_sigmoid_loss_has_siglip_temperature_and_bias():
    config = tiny_config(total_steps=8, loss="sigmoid", **{"optim.lr": 2e-3})
    setup, state, history = run_steps(config)
    assert setup.model.logit_bias_init == -10.0
    assert setup.model.logit_scale_init == pytest.approx(np.log(10.0))
    assert "logit_bias" in state.params and float(state.params["logit_bias"]) != -10.0
    assert history[-1]["loss"] < history[0]["loss"]


def test_a_logit_bias_for_a_softmax_loss_is_an_error():
    with pytest.raises(ValueError, match="logit_bias_init=-5.0 is set, but loss 'softmax' has no logit bias"):
        build(tiny_config(logit_bias_init=-5.0))
    assert build(tiny_config(loss="sigmoid", logit_bias_init=-5.0)).model.logit_bias_init == -5.0


def test_trimmed_text_trains_exactly_like_full_context():
    """Cutting the synthetic captions (5 tokens) to 16 of 77 positions is exact under the
    causal text tower: the same losses and parameters to float rounding."""
    from clip_jax.models.text import trim_after_eot

    results = {}
    for trim in (True, False):
        config = tiny_config()
        setup = build(config)
        state = setup.init_state(jax.random.key(config.seed, impl="rbg"))
        data = SyntheticIterator(setup.local_batch_size, setup.model.config.vision.image_size, config.seed)
        step_fn, losses = jit_train_step(setup), []
        for _ in range(setup.total_steps):
            batch = next(data)
            if trim:
                batch = {**batch, "tokens": trim_after_eot(batch["tokens"])}
                assert batch["tokens"].shape[1] == 16
            state, metrics = step_fn(state, global_batch(batch, setup.mesh))
            losses.append(float(metrics["loss"]))
        results[trim] = (losses, flat_params(state))
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-5)
    for name, value in results[False][1].items():
        np.testing.assert_allclose(results[True][1][name], value, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_uint8_images_train_like_their_float32_normalisation(accumulation):
    """Batches cross to the devices as uint8 and are normalised inside the step: the same
    loss and gradients as the float32 batch the pipeline used to send."""
    from clip_jax.gradients import make_grad_fn
    from clip_jax.preprocess import pixel_affine

    setup = build(tiny_config(accumulation_steps=accumulation))
    state = setup.init_state(jax.random.key(0, impl="rbg"))
    tokens = next(SyntheticIterator(16, 32))["tokens"]
    pixels = np.random.RandomState(0).randint(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    scale, offset = pixel_affine("clip")
    floats = pixels.astype(np.float32) * scale + offset
    grad_fn = jax.jit(make_grad_fn(setup.model, "softmax", setup.mesh, accumulation))
    rng = jax.random.PRNGKey(1)
    results = [grad_fn(state.params, state.batch_stats, global_batch({"images": images, "tokens": tokens}, setup.mesh),
                       rng) for images in (pixels, floats)]
    (loss_u, _, _, grads_u), (loss_f, _, _, grads_f) = results
    assert abs(float(loss_u) - float(loss_f)) <= 1e-5
    for a, b in zip(jax.tree.leaves(grads_u), jax.tree.leaves(grads_f)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    step_fn = jit_train_step(setup)
    _, metrics = step_fn(state, global_batch({"images": pixels, "tokens": tokens}, setup.mesh))
    assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_crop_windows_resized_in_the_step_train_like_host_crops(tmp_path, accumulation):
    """train_transform="device": the pipeline ships crop windows and the step resizes
    them.  The same shards, seed and crops as the host's "fast" transform: the resized
    windows equal its crops before rounding (half a level), and loss and gradients agree
    to that rounding."""
    from clip_jax import data, window_resize
    from clip_jax.data import image_ops
    from clip_jax.gradients import make_grad_fn
    from clip_jax.preprocess import pixel_affine
    from tests.helpers.data import captioned_shards

    spec = captioned_shards(str(tmp_path), 2, 12, size=(90, 130))
    setup = build(tiny_config(accumulation_steps=accumulation))
    size = setup.model.config.vision.image_size
    batches = {}
    for transform in ("fast", "device"):
        with data.train_iterator(spec, batch_size=16, image_size=size, seed=5, shuffle_buffer=8,
                                 crop_scale=(0.3, 1.0), train_transform=transform) as it:
            batches[transform] = next(it)
    fast, device = batches["fast"], batches["device"]
    np.testing.assert_array_equal(fast["tokens"], device["tokens"])
    assert device["canvas"].shape == (16, *image_ops.canvas_shape(size), 3) and device["canvas"].dtype == np.uint8
    crops = np.asarray(window_resize.crops(*(device[k] for k in data.WINDOW_KEYS), size))
    scale, offset = pixel_affine(setup.model.config.family)
    assert np.abs(crops - fast["images"]).max() <= 0.51

    state = setup.init_state(jax.random.key(0, impl="rbg"))
    grad_fn = jax.jit(make_grad_fn(setup.model, "softmax", setup.mesh, accumulation))
    rng = jax.random.PRNGKey(1)
    resized = {"images": crops * scale + offset, "tokens": fast["tokens"]}  # the step's own input, made outside
    (loss_f, _, _, grads_f), (loss_d, _, _, grads_d), (loss_r, _, _, grads_r) = [
        grad_fn(state.params, state.batch_stats, global_batch(batch, setup.mesh), rng)
        for batch in (fast, device, resized)]
    assert abs(float(loss_r) - float(loss_d)) <= 1e-5
    for a, b in zip(jax.tree.leaves(grads_d), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert abs(float(loss_f) - float(loss_d)) <= 1e-3  # the host's crops are rounded to whole levels
    difference = optax.tree.norm(jax.tree.map(lambda a, b: a - b, grads_d, grads_f))
    assert float(difference) <= 0.02 * float(optax.tree.norm(grads_f))
    _, metrics = jit_train_step(setup)(state, global_batch(device, setup.mesh))
    assert np.isfinite(float(metrics["loss"]))
