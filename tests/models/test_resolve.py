"""Naming an architecture without editing the registry (clip_jax.models.resolve_config):
a registered name, dimensions (dict or ConfigDict), an open_clip model-config JSON; bad
dimensions fail naming the field and its valid range; a custom architecture trained by
train.py is read back by load_checkpoint, eval.py and clip_jax.convert with nothing
registered, and its open_clip export gives the same features in open_clip."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import clip_jax
from clip_jax.models import CLIPConfig, TextConfig, VisionConfig, get_config, name_of, resolve_config
from clip_jax.models.open_clip_config import to_open_clip
from clip_jax.trainer import build
from tests.helpers.runtime import ROOT, load_config

DIMS = {"embed_dim": 48, "act": "gelu",
        "vision": {"image_size": 40, "width": 96, "layers": 2, "patch_size": 8, "head_width": 32, "mlp_ratio": 2.0},
        "text": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
EXPECTED = CLIPConfig(embed_dim=48, act="gelu",
                      vision=VisionConfig(image_size=40, width=96, layers=2, patch_size=8, head_width=32,
                                          mlp_ratio=2.0),
                      text=TextConfig(context_length=32, vocab_size=49408, width=64, heads=4, layers=2))


def test_the_three_ways_to_name_an_architecture(tmp_path):
    assert resolve_config("ViT-B/32") == get_config("ViT-B/32")
    assert resolve_config(DIMS) == EXPECTED
    assert resolve_config(ml_collections.ConfigDict(DIMS)) == EXPECTED
    assert resolve_config(ml_collections.FrozenConfigDict(DIMS)) == EXPECTED
    open_clip_json = tmp_path / "model.json"  # as open_clip's model_configs/*.json
    open_clip_json.write_text(json.dumps(to_open_clip(EXPECTED)))
    assert resolve_config(str(open_clip_json)) == EXPECTED
    hub_json = tmp_path / "open_clip_config.json"  # as a hub folder's
    hub_json.write_text(json.dumps({"model_cfg": to_open_clip(EXPECTED), "preprocess_cfg": {}}))
    assert resolve_config(str(hub_json)) == EXPECTED
    assert resolve_config(EXPECTED) is EXPECTED
    # partial dimensions take CLIPConfig's defaults (ViT-B/32's); a 4-tuple is a ResNet
    assert resolve_config({"vision": {"layers": 6}}) == CLIPConfig(vision=VisionConfig(layers=6))
    resnet = resolve_config({"embed_dim": 32, "vision": {"image_size": 64, "width": 16, "layers": [1, 1, 1, 1]},
                             "text": {"width": 64, "heads": 2, "layers": 2}})
    assert resnet == get_config("tiny-resnet") and name_of(resnet) == "tiny-resnet"
    assert clip_jax.create_model(DIMS).config == EXPECTED  # create_model takes every form


@pytest.mark.parametrize("change,message", [
    ({"vision": {"width": 100}}, r"vision.width=100 is not divisible by vision.head_width=32"),
    ({"vision": {"image_size": 42}}, r"vision.image_size=42 is not divisible by vision.patch_size=8"),
    ({"text": {"width": 66}}, r"text.width=66 is not divisible by text.heads=4"),
    ({"vision": {"layers": 0}}, r"vision.layers=0: must be a positive integer"),
    ({"embed_dim": -8}, r"embed_dim=-8: must be a positive integer"),
    ({"text": {"heads": 2.5}}, r"text.heads=2.5: must be a positive integer"),
    ({"vision": {"mlp_ratio": 0.0}}, r"vision.mlp_ratio=0.0: must be a number > 0"),
    ({"act": "relu"}, r"act='relu': valid activations are quick_gelu, gelu"),
    ({"vision": {"layers": [1, 1, 1], "patch_size": None}}, r"a ModifiedResNet has 4 stages"),
    ({"vision": {"layers": [1, 1, 1, 1], "patch_size": 8, "image_size": 64}}, r"a ModifiedResNet .* has no patches"),
    ({"vision": {"layers": [1, 1, 1, 1], "patch_size": None, "image_size": 48}},
     r"vision.image_size=48: a ModifiedResNet needs a multiple of 32"),
    ({"vision": {"heads": 3}}, r"unknown key vision.heads in the model dimensions; valid: vision.image_size"),
    ({"depth": 3}, r"unknown key depth .*; valid: embed_dim, vision, text, act"),
])
def test_bad_dimensions_name_the_field_and_range(change, message):
    spec = json.loads(json.dumps(DIMS))
    for key, value in change.items():
        if isinstance(value, dict):
            spec[key].update(value)
        else:
            spec[key] = value
    with pytest.raises(ValueError, match=message):
        resolve_config(spec)


def test_unknown_names_and_missing_files():
    with pytest.raises(ValueError, match="unknown model 'ViT-Q/99'.*ViT-B/32.*open_clip model-config JSON"):
        resolve_config("ViT-Q/99")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        resolve_config("/nowhere.json")
    with pytest.raises(TypeError, match="registered name, a dict of dimensions"):
        resolve_config(42)


def test_training_configs_take_all_three_forms(tmp_path):
    """config.model is declared with any type (clip_jax/train_config.py), so a config file or the
    command line can set a name, a ConfigDict of dimensions or a JSON path; build() (shapes
    only, nothing compiled) makes the model and the checkpoint metadata from each."""
    open_clip_json = tmp_path / "model.json"
    open_clip_json.write_text(json.dumps(to_open_clip(EXPECTED)))
    for spec, label in (("tiny-vit", "tiny-vit"), (ml_collections.ConfigDict(DIMS), "custom"),
                        (str(open_clip_json), str(open_clip_json))):
        config = load_config("demo", "runlocal")
        config.model = spec
        setup = build(config)
        assert setup.meta["model"] == label
        assert CLIPConfig.from_dict(setup.meta["model_config"]) == setup.model.config
    custom = load_config("custom_vit")
    assert build(custom).model.config == resolve_config(custom.model)
    custom.model.vision.width = 100
    with pytest.raises(ValueError, match="vision.width=100 is not divisible by vision.head_width=32"):
        build(custom)


def _run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "XLA_FLAGS": ""})  # one CPU device, as a user's machine
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_custom_architecture_round_trip_without_registration(tmp_path):
    """configs/custom_vit.py trained a few steps by train.py (a dimension overridden on the
    command line); then load_checkpoint(workdir), eval.py on the workdir and
    clip_jax.convert to open_clip, whose export open_clip loads by itself."""
    workdir = str(tmp_path / "custom")
    _run("train.py", "--config", "configs/custom_vit.py:runlocal", "--workdir", workdir, "--config.model.text.layers=2")
    expected = resolve_config({**load_config("custom_vit").model.to_dict(),
                               "text": {**load_config("custom_vit").model.text.to_dict(), "layers": 2}})
    assert name_of(expected) is None  # nothing in the registry describes it
    model, variables = clip_jax.load_checkpoint(workdir)
    assert model.config == expected

    out = tmp_path / "zeroshot.json"
    _run("eval.py", "--checkpoint", workdir, "--data", "demo:heldout", "--templates", "{}", "--batch_size", "250",
         "--output", str(out))
    assert json.load(open(out))["metrics"]["examples"] == 1000

    exported = tmp_path / "open_clip_export"
    done = _run("-m", "clip_jax.convert", workdir, str(exported), "--to", "open_clip")
    assert "custom architecture, act=gelu" in done.stdout
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    reference = open_clip.create_model(f"local-dir:{exported}").eval()
    rs = np.random.RandomState(0)
    images = rs.randn(2, 32, 32, 3).astype(np.float32)
    tokens = np.asarray(clip_jax.tokenize(["a red circle", "two small blue squares on the left"]))
    with torch.no_grad():
        theirs = (reference.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy(),
                  reference.encode_text(torch.from_numpy(tokens).long()).numpy())
    ours = (np.asarray(clip_jax.encode_image(model, variables, images)),
            np.asarray(clip_jax.encode_text(model, variables, tokens)))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs)) <= 1e-4


def test_every_tower_honours_mlp_ratio_or_rejects_it(tmp_path):
    """text.mlp_ratio sizes CLIP's text MLP (and travels through open_clip and Hugging Face
    configs and files); a ModifiedResNet has no MLP, so a ratio other than 4 is an error."""
    from clip_jax.models.families.clip_naming import config_from_hf, config_to_hf

    dims = json.loads(json.dumps(DIMS))
    dims["text"]["mlp_ratio"] = 2.0
    model = clip_jax.create_model(dims)
    variables = clip_jax.init_variables(model)
    assert variables["params"]["text"]["transformer"]["blocks"]["mlp"]["c_fc"]["kernel"].shape == (2, 64, 128)
    assert resolve_config(to_open_clip(model.config)) == model.config
    hf = config_to_hf(model.config, 1.0)
    assert hf["text_config"]["intermediate_size"] == 128 and config_from_hf(hf) == model.config
    for format, path in (("open_clip", tmp_path / "oc"), ("hf", tmp_path / "hf")):
        again, loaded = clip_jax.load_checkpoint(clip_jax.export_checkpoint(model, variables, str(path), format))
        assert again.config == model.config, format
        np.testing.assert_array_equal(loaded["params"]["text"]["transformer"]["blocks"]["mlp"]["c_fc"]["kernel"],
                                      variables["params"]["text"]["transformer"]["blocks"]["mlp"]["c_fc"]["kernel"])
    resnet = {"embed_dim": 32, "vision": {"layers": [1, 1, 1, 1], "image_size": 64, "width": 16, "mlp_ratio": 2.0},
              "text": {"width": 64, "heads": 2, "layers": 1}}
    with pytest.raises(ValueError, match="vision.mlp_ratio=2.0: a ModifiedResNet has no MLP blocks"):
        resolve_config(resnet)
