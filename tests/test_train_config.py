"""Every shipped config builds (validates and traces shapes) without compiling."""
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
