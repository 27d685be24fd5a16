"""Every shipped config builds (validates and traces shapes) without compiling."""
import os

import pytest

from clip_jax.trainer import build
from tests.helpers.runtime import load_config as load


@pytest.mark.parametrize("name", ["vit_b32", "vit_b16", "vit_l14", "vit_l14_336", "rn50", "rn101", "rn50x4",
                                  "rn50x16", "rn50x64"])
def test_paper_configs(name):
    config = load(name)
    assert config.batch_size == 32768 and config.optim.warmup_steps == 2000 and config.optim.wd == 0.2
    resnet = name.startswith("rn")
    assert (config.optim.b2, config.optim.eps) == ((0.999, 1e-8) if resnet else (0.98, 1e-6))
    setup = build(load(name, "runlocal"))
    assert setup.total_steps == 3


@pytest.mark.parametrize("variant", ["ring", "siglip", "accum", "flip", "lit"])
def test_beyond_configs(variant):
    config = load("beyond", variant)
    assert config.model == "ViT-B/16"
    build(load("beyond", f"{variant},runlocal"))


def test_demo_config():
    assert build(load("demo")).total_steps == 1000
    with pytest.raises(ValueError, match="runlocal"):
        load("demo", "fast")


def test_custom_vit_config():
    """A model given by its dimensions; the checkpoint metadata carries them."""
    config = load("custom_vit")
    setup = build(config)
    assert setup.model.config.vision.width == config.model.vision.width == 96
    assert setup.meta["model"] == "custom" and setup.meta["model_config"]["act"] == "gelu"
    assert build(load("custom_vit", "runlocal")).total_steps == 4
    with pytest.raises(ValueError, match="runlocal"):
        load("custom_vit", "fast")


def test_checked_fills_defaults_refuses_unknown_keys_and_bad_values():
    """train_config.checked: the one place defaults come from and values are validated."""
    import ml_collections

    from clip_jax.train_config import base_config, checked

    partial = ml_collections.ConfigDict({"model": "tiny-vit", "batch_size": 8, "total_steps": 2,
                                         "optim": {"lr": 1e-3}, "data": {"options": {"num_threads": 1}}})
    full = checked(partial, devices=1, processes=1)
    defaults = base_config()
    assert full.optim.lr == 1e-3 and full.optim.wd == defaults.optim.wd and full.trim_text == defaults.trim_text
    assert full.data.options.num_threads == 1  # data.options are the pipeline's keywords, checked there
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'; valid: .*optim.lr\b"):
        checked(ml_collections.ConfigDict({"optim": {"lrr": 1.0}, "total_steps": 1}), 1, 1)
    for change, message in ((dict(trim_text="sometimes"), "trim_text 'sometimes' unknown"),
                            (dict(batch_size=12), "not divisible by the 8 devices"),
                            (dict(total_steps=0), "set exactly one of total_steps"),
                            (dict(patch_dropout=1.0), r"patch_dropout must be in \[0, 1\)"),
                            (dict(evals=({"name": "x", "task": "caption", "data": "demo:val"},)), "task 'caption'")):
        config = ml_collections.ConfigDict({"model": "tiny-vit", "batch_size": 16, "total_steps": 2, **change})
        with pytest.raises(ValueError, match=message):
            checked(config, devices=8, processes=1)


def test_a_config_with_only_some_keys_trains(tmp_path):
    """The trainer reads the checked config, so keys a config leaves out take their defaults."""
    import ml_collections

    from clip_jax.trainer import train

    partial = ml_collections.ConfigDict({
        "model": "tiny-vit", "compute_dtype": "float32", "batch_size": 8, "total_steps": 1, "log_every": 1,
        "checkpoint_every": 1, "data": {"train": "demo:train", "options": {"shuffle_buffer": 16}}})
    assert int(train(partial, str(tmp_path)).step) == 1
    assert os.path.isdir(tmp_path / "checkpoints" / "1")
