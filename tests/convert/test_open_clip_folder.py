"""open_clip configs travel with the weights, and the activation is never guessed silently.

  * export to open_clip writes open_clip_config.json beside the weights (or a hub-layout
    folder); open_clip (`local-dir:`) and clip_jax both reload it with no name;
  * `load_checkpoint(file, config=JSON)` takes open_clip's model-config format; fields
    clip_jax cannot build are errors naming the field (checked on every model config the
    installed open_clip ships);
  * a bare state dict gets one warning naming the assumed activation and the two ways to
    choose (name=, act=); a GELU and a QuickGELU ViT-B/32 give open_clip's features to
    1e-4 either way, and through an open_clip_config.json with no warning at all.
"""
import dataclasses
import glob
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

import clip_jax  # noqa: E402
from clip_jax.models import get_config, resolve_config  # noqa: E402
from clip_jax.models.open_clip_config import to_open_clip  # noqa: E402
from tests.helpers.oracles import max_diff, perturb_torch_model, random_inputs  # noqa: E402
from tests.helpers.runtime import ROOT  # noqa: E402

TOLERANCE = 1e-4
# A GELU architecture no registry knows: only its config can say how to build it.
CUSTOM = {"embed_dim": 24, "act": "gelu",
          "vision": {"image_size": 48, "width": 64, "layers": 2, "patch_size": 16, "head_width": 16, "mlp_ratio": 3.0},
          "text": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
LOGGER = "clip_jax.convert.model_files"


def features(model, variables, seed=0):
    images, tokens = random_inputs(model.config, batch=2, seed=seed)
    return np.asarray(clip_jax.encode_image(model, variables, images)), np.asarray(
        clip_jax.encode_text(model, variables, tokens))


def torch_features(reference, config, seed=0):
    images, tokens = random_inputs(config, batch=2, seed=seed)
    with torch.no_grad():
        return (reference.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy(),
                reference.encode_text(torch.from_numpy(tokens).long()).numpy())


def assert_close(ours, theirs):
    assert max(max_diff(a, b) for a, b in zip(ours, theirs)) <= TOLERANCE


def activation_warnings(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture(scope="module")
def custom():
    model = clip_jax.create_model(CUSTOM)
    variables = clip_jax.init_variables(model, 3)
    variables = {"params": {**variables["params"], "logit_scale": np.float32(np.log(30.0))}}
    return model, variables


@pytest.mark.parametrize("layout", ["folder", "file.safetensors", "file.bin"])  # open_clip's local-dir: skips .pt
def test_export_reloads_in_open_clip_and_clip_jax_without_a_name(custom, tmp_path, caplog, layout):
    model, variables = custom
    target = str(tmp_path / "export") if layout == "folder" else str(tmp_path / "export" / f"weights.{layout[5:]}")
    written = clip_jax.export_checkpoint(model, variables, target, "open_clip")
    folder = target if layout == "folder" else os.path.dirname(target)
    assert written == target and os.path.isfile(os.path.join(folder, "open_clip_config.json"))
    with open(os.path.join(folder, "open_clip_config.json")) as f:
        stored = json.load(f)
    assert stored["model_cfg"] == to_open_clip(model.config) and stored["model_cfg"]["quick_gelu"] is False
    assert stored["preprocess_cfg"]["mean"][0] == pytest.approx(0.48145466)

    reference = open_clip.create_model(f"local-dir:{folder}").eval()
    ours = features(model, variables)
    assert_close(ours, torch_features(reference, model.config))
    for path in {folder, target}:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            again, again_vars = clip_jax.load_checkpoint(path)
        assert again.config == model.config and not activation_warnings(caplog)
        assert_close(features(again, again_vars), ours)


def test_export_beside_another_architecture_is_refused(custom, tmp_path):
    model, variables = custom
    clip_jax.export_checkpoint(model, variables, str(tmp_path / "a.safetensors"), "open_clip")
    clip_jax.export_checkpoint(model, variables, str(tmp_path / "b.safetensors"), "open_clip")  # same: fine
    other = clip_jax.create_model("tiny-vit")
    with pytest.raises(ValueError, match="already describes another architecture"):
        clip_jax.export_checkpoint(other, clip_jax.init_variables(other), str(tmp_path / "c.safetensors"), "open_clip")
    assert not os.path.exists(tmp_path / "c.safetensors")


def test_a_bare_state_dict_with_its_model_config_json(custom, tmp_path, caplog):
    """The weights alone (no config beside them), then the architecture from an open_clip
    model-config JSON file as open_clip's model_configs/ holds them."""
    model, variables = custom
    weights = str(tmp_path / "weights" / "tiny.safetensors")
    os.makedirs(os.path.dirname(weights))
    from clip_jax.convert.safetensors_io import save_safetensors
    from clip_jax.convert.table import variables_to_state_dict

    save_safetensors(weights, variables_to_state_dict(variables, model.config), {"format": "pt"})
    config_file = tmp_path / "tiny-gelu.json"
    config_file.write_text(json.dumps(to_open_clip(model.config)))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    guessed, _ = clip_jax.load_checkpoint(weights)
    assert guessed.config.act == "quick_gelu"  # the assumptions (activation, 64-wide heads), announced:
    [warning] = activation_warnings(caplog)
    for part in ("assuming QuickGELU", "64-wide attention heads", "name=", "act=", "config="):
        assert part in warning.message
    caplog.clear()
    loaded, loaded_vars = clip_jax.load_checkpoint(weights, config=str(config_file))
    assert loaded.config == model.config and not activation_warnings(caplog)
    assert_close(features(loaded, loaded_vars), features(model, variables))
    with pytest.raises(ValueError, match="not both"):
        clip_jax.load_checkpoint(weights, name="tiny-vit", config=str(config_file))
    # the command line: --config, and the open_clip folder it writes loads in open_clip
    out = tmp_path / "converted"
    done = subprocess.run([sys.executable, "-m", "clip_jax.convert", weights, str(out), "--to", "open_clip",
                           "--config", str(config_file)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XLA_FLAGS": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "act=gelu" in done.stdout and "bare state dict" not in done.stderr
    reference = open_clip.create_model(f"local-dir:{out}").eval()
    assert_close(torch_features(reference, model.config), features(model, variables))


def test_weights_that_do_not_fit_the_config_beside_them(custom, tmp_path):
    model, variables = custom
    clip_jax.export_checkpoint(model, variables, str(tmp_path / "custom.safetensors"), "open_clip")
    other = clip_jax.create_model("tiny-vit")
    from clip_jax.convert.safetensors_io import save_safetensors
    from clip_jax.convert.table import variables_to_state_dict

    stray = str(tmp_path / "stray.safetensors")
    save_safetensors(stray, variables_to_state_dict(clip_jax.init_variables(other), other.config), {"format": "pt"})
    with pytest.raises(ValueError, match="does not fit .*open_clip_config.json beside it"):
        clip_jax.load_checkpoint(stray)
    assert clip_jax.load_checkpoint(stray, name="tiny-vit")[0].config == other.config


# -- open_clip's model-config format --------------------------------------------------------


def _shipped_configs():
    folder = os.path.join(os.path.dirname(open_clip.__file__), "model_configs")
    return sorted(glob.glob(os.path.join(folder, "*.json")))


def test_every_shipped_open_clip_config_resolves_or_names_what_is_unsupported():
    """Plain CLIP configs resolve to the registered architecture of the same name (the
    open_clip names mean what they mean in open_clip: GELU unless -quickgelu); the rest
    (timm or Hugging Face towers, SigLIP, CoCa, other pooling, ...) fail naming a field."""
    resolved, refused = {}, {}
    for path in _shipped_configs():
        name = os.path.basename(path)[:-5]
        try:
            resolved[name] = resolve_config(path)
        except ValueError as error:
            refused[name] = str(error)
            assert str(error).startswith(path) and ("open_clip config field" in str(error) or "_cfg." in str(error))
    print(f"{len(resolved)} open_clip configs resolve, {len(refused)} are refused")
    for name in ("ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-g-14",
                 "RN50-quickgelu", "RN101-quickgelu", "RN50x64-quickgelu"):
        assert resolved[name] == get_config(name), name
    assert resolved["RN50"] == dataclasses.replace(get_config("RN50"), act="gelu")  # open_clip's RN50 is GELU
    assert "ViT-M-32" in resolved  # a size the registry lacks
    assert "timm_model_name" in refused["convnext_base"]
    assert "custom_text" in refused["ViT-B-16-SigLIP"] or "init_logit_bias" in refused["ViT-B-16-SigLIP"]
    assert "hf_model_name" in refused["roberta-ViT-B-32"]
    assert "multimodal_cfg" in refused["coca_ViT-B-32"]


@pytest.mark.parametrize("change,field", [
    ({"vision_cfg": {"pool_type": "avg"}}, "vision_cfg.pool_type='avg'"),
    ({"vision_cfg": {"no_ln_pre": True}}, "vision_cfg.no_ln_pre=True"),
    ({"text_cfg": {"no_causal_mask": True}}, "text_cfg.no_causal_mask=True"),
    ({"text_cfg": {"proj_bias": True}}, "text_cfg.proj_bias=True"),  # (text_cfg.mlp_ratio is honoured now)
    ({"custom_text": True}, "custom_text=True"),
    ({"init_logit_bias": -10}, "init_logit_bias=-10"),
    ({"vision_cfg": {"colour": 3}}, "unknown open_clip config field 'vision_cfg.colour'"),
])
def test_unsupported_open_clip_fields_are_named(tmp_path, change, field):
    config = to_open_clip(get_config("tiny-vit"))
    for key, value in change.items():
        if isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model_cfg": config}))
    with pytest.raises(ValueError) as info:
        resolve_config(str(path))
    assert field in str(info.value) and str(path) in str(info.value)


# -- the activation of bare state dicts: ViT-B/32, GELU and QuickGELU ------------------------


@pytest.mark.parametrize("open_clip_name,act", [("ViT-B-32", "gelu"), ("ViT-B-32-quickgelu", "quick_gelu")])
def test_vit_b32_activation_by_name_act_or_config_file(tmp_path, caplog, open_clip_name, act):
    torch.manual_seed(4)
    reference = open_clip.create_model(open_clip_name, pretrained=None).eval()
    perturb_torch_model(reference, seed=4)
    config = get_config(open_clip_name)
    expected = torch_features(reference, config)
    from safetensors.torch import save_file

    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    del reference
    caplog.set_level(logging.WARNING, logger=LOGGER)
    try:
        for how in ({"name": open_clip_name}, {"act": act}, {}):
            caplog.clear()
            model, variables = clip_jax.load_checkpoint(str(weights), **how)
            warnings = activation_warnings(caplog)
            if how:
                assert model.config == config and not warnings, how
                assert_close(features(model, variables), expected)
            else:  # nothing to go by: OpenAI's QuickGELU assumed, once, loudly
                assert model.config.act == "quick_gelu" and len(warnings) == 1
                assert "assuming QuickGELU" in warnings[0].message and "name=" in warnings[0].message
            del model, variables
        # the hub layout: open_clip_config.json beside the weights settles it, silently
        (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": to_open_clip(config)}))
        caplog.clear()
        model, variables = clip_jax.load_checkpoint(str(tmp_path))
        assert model.config == config and not activation_warnings(caplog)
        assert_close(features(model, variables), expected)
    finally:
        weights.unlink()
