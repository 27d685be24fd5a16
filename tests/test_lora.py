"""LoRA adapters (clip_jax/lora.py) in the one trainer: B = 0 is the base model bit for
bit, merging equals the formula in float64, a trained run's merged export equals its
adapted forward, frozen weights stay bit-identical, only the adapters hold optimizer
state, and bad targets fail before compiling."""
import jax
import numpy as np
import pytest

import clip_jax
from clip_jax import lora
from clip_jax.gradients import Trainable
from clip_jax.models.model import example_inputs
from clip_jax.sharding import path_string
from clip_jax.trainer import build, train
from tests.helpers.training import synthetic_data, tiny_config

TARGETS = (r"^visual/transformer/blocks/attn/(in|out)_proj/kernel$", r"^text/transformer/blocks/mlp/c_fc/kernel$",
           r"^visual/proj$")


def flat(tree):
    return {path_string(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def features(model, params, seed=0):
    images, tokens = example_inputs(model.config, batch=3)
    images = jax.random.normal(jax.random.PRNGKey(seed), images.shape)
    image, text, _ = jax.jit(model.apply)({"params": params}, images, tokens)
    return np.asarray(image), np.asarray(text)


def test_zero_b_is_the_base_model_and_merge_is_the_formula():
    model = clip_jax.create_model("tiny-vit")
    params = clip_jax.init_variables(model, seed=1)["params"]
    with pytest.raises(ValueError, match="adapters go on dense kernels"):
        lora.abstract_adapters(params, (r"^visual/proj$",), 4)  # a projection matrix named proj, not kernel
    targets = TARGETS[:2]
    adapters = lora.init_adapters(jax.random.PRNGKey(2), lora.abstract_adapters(params, targets, 4))
    view = Trainable(adapter_scale=lora.scale_of(8.0, 4))
    adapted = view.join({"lora": adapters}, params)
    for key, value in flat(params).items():  # B = 0: every weight bit-identical
        np.testing.assert_array_equal(flat(adapted)[key], value, err_msg=key)
    # Non-zero B: merged weights are W + (alpha / rank) A @ B.
    adapters = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.random.normal(jax.random.PRNGKey(len(path_string(p))), x.shape) * 0.1
        if path_string(p).endswith("/b") else x, adapters)
    merged = flat(view.join({"lora": adapters}, params))
    a = np.asarray(adapters["visual"]["transformer"]["blocks"]["attn"]["in_proj"]["kernel"]["a"], np.float64)
    b = np.asarray(adapters["visual"]["transformer"]["blocks"]["attn"]["in_proj"]["kernel"]["b"], np.float64)
    kernel = flat(params)["visual/transformer/blocks/attn/in_proj/kernel"].astype(np.float64)
    np.testing.assert_allclose(merged["visual/transformer/blocks/attn/in_proj/kernel"], kernel + 2.0 * a @ b,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(merged["visual/ln_post/scale"], flat(params)["visual/ln_post/scale"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    model = clip_jax.create_model("tiny-vit")
    start = clip_jax.init_variables(model, seed=4)
    checkpoint = clip_jax.export_checkpoint(model, start, str(root / "start.safetensors"))
    config = tiny_config(total_steps=4, init_from=checkpoint, **{"lora.targets": TARGETS[:2], "lora.rank": 4,
                                                                 "optim.lr": 1e-2, "optim.warmup_steps": 1})
    workdir = str(root / "run")
    state = train(config, workdir, synthetic_data)
    return model, start, state, workdir, config


def test_frozen_weights_bit_identical_and_only_adapters_in_optimizer_state(trained):
    model, start, state, _, config = trained
    params = dict(state.params)
    adapters = params.pop("lora")
    for key, value in flat(start["params"]).items():
        np.testing.assert_array_equal(flat(params)[key], value, err_msg=key)
    assert all(np.abs(v).max() > 0 for k, v in flat(adapters).items() if k.endswith("/b"))  # they trained
    state_sizes = sum(np.size(x) for x in jax.tree.leaves(state.opt_state) if np.ndim(x))
    assert state_sizes == 2 * lora.count(adapters)  # Adam's two moments of the adapters, nothing else


def test_merged_export_equals_the_adapted_forward(trained, tmp_path):
    model, _, state, workdir, config = trained
    params = dict(state.params)
    adapters = params.pop("lora")
    adapted = Trainable(lora.scale_of(config.lora.alpha, config.lora.rank)).join({"lora": adapters}, params)
    reference = features(model, adapted)
    _, merged = clip_jax.load_checkpoint(workdir)  # a LoRA workdir reads back as plain, merged weights
    assert "lora" not in merged["params"]
    path = clip_jax.export_checkpoint(model, merged, str(tmp_path / "merged.safetensors"), "open_clip")
    reloaded_model, reloaded = clip_jax.load_checkpoint(path)
    for ours, theirs in zip(features(reloaded_model, reloaded["params"]), reference):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    base = features(model, params)
    assert np.abs(base[0] - reference[0]).max() > 1e-4  # the adapters changed the model


def test_a_target_matching_nothing_lists_close_paths():
    with pytest.raises(ValueError, match=r"matches no parameter; close parameter paths: \[.*attn/in_proj/kernel"):
        build(tiny_config(**{"lora.targets": (r"^visual/transformer/blocks/attn/in_proj/kernal$",)}))
    with pytest.raises(ValueError, match="lora.rank must be a positive integer"):
        build(tiny_config(**{"lora.targets": TARGETS[:1], "lora.rank": 0}))
    with pytest.raises(ValueError, match="is not a regex"):
        build(tiny_config(**{"lora.targets": ("^visual/(",)}))
