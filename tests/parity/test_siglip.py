"""SigLIP parity with transformers' SiglipModel: seeded random models of the base/16 and
so400m/14 shapes (full widths, shallow for CI time) loaded from Hugging Face folders
(whole and sharded) and from big_vision .npz files; image and text embeddings and the
logits within 1e-4; export back to a folder transformers loads, tensor for tensor.

The .npz files are built from the Hugging Face weights by inverting transformers'
conversion (its convert_siglip_to_hf.py mapping, written out independently here): flax
kernels [in, out], attention kernels [width, heads, head_dim] and [heads, head_dim,
width], positions [1, n, width], the MAP head's q/k/v separate, `t` and `b`."""
import dataclasses
import gc
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import clip_jax  # noqa: E402
from clip_jax.models.families.siglip_naming import config_to_hf  # noqa: E402
from tests.helpers.oracles import max_diff, perturb_torch_model  # noqa: E402
from tests.helpers.siglip import to_big_vision  # noqa: E402

TOLERANCE = 1e-4
# name -> depth of both towers in the test (full widths, heads, MLPs, positions, vocabulary)
SHAPES = {"siglip-base-patch16-224": 2, "siglip-so400m-patch14-384": 1}


def shallow(name: str, layers: int):
    config = clip_jax.get_config(name)
    return dataclasses.replace(config, vision=dataclasses.replace(config.vision, layers=layers),
                               text=dataclasses.replace(config.text, layers=layers))


def reference_model(config, seed: int = 0):
    hf = config_to_hf(config)
    torch.manual_seed(seed)
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=hf["text_config"],
                                                               vision_config=hf["vision_config"])).eval()
    perturb_torch_model(model, seed=seed)  # also moves the zero-initialised biases
    with torch.no_grad():
        model.logit_scale.fill_(np.log(117.0))  # above CLIP's cap of 100, as released SigLIPs
        model.logit_bias.fill_(-12.5)
    return model


def inputs(config, seed: int = 0):
    rs = np.random.RandomState(seed)
    size = config.vision.image_size
    images = rs.randn(2, size, size, 3).astype(np.float32)
    tokens = rs.randint(0, config.text.vocab_size, (3, config.text.context_length)).astype(np.int32)
    tokens[1, 5:] = 1  # a short caption: EOS then EOS padding, as SigLIP's tokenizer pads
    return images, tokens


def hf_outputs(model, images, tokens):
    with torch.no_grad():
        pixels, ids = torch.from_numpy(images.transpose(0, 3, 1, 2)), torch.from_numpy(tokens).long()
        out = model(input_ids=ids, pixel_values=pixels)
        return (model.get_image_features(pixel_values=pixels).numpy(), model.get_text_features(input_ids=ids).numpy(),
                out.logits_per_image.numpy())


def ours(model, variables, images, tokens):
    image = np.asarray(clip_jax.encode_image(model, variables, images), np.float64)
    text = np.asarray(clip_jax.encode_text(model, variables, tokens), np.float64)
    params = variables["params"]
    cosine = (image / np.linalg.norm(image, axis=-1, keepdims=True)) @ (text / np.linalg.norm(text, axis=-1,
                                                                                               keepdims=True)).T
    return image, text, np.exp(float(params["logit_scale"])) * cosine + float(params["logit_bias"])


@pytest.fixture(scope="module", params=sorted(SHAPES))
def reference(request, tmp_path_factory):
    """(config, HF folder, HF outputs, HF state dict) of one shape; the torch model is dropped."""
    config = shallow(request.param, SHAPES[request.param])
    model = reference_model(config)
    folder = tmp_path_factory.mktemp("hf")
    model.save_pretrained(folder)
    images, tokens = inputs(config)
    expected = hf_outputs(model, images, tokens)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    del model
    gc.collect()
    yield request.param, config, folder, images, tokens, expected, state
    shutil.rmtree(folder, ignore_errors=True)  # hundreds of MB: not left for pytest's retention


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, emptied after the test (the checkpoints written there are large)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_hf_folder_parity(reference):
    name, config, folder, images, tokens, expected, _ = reference
    model, variables = clip_jax.load_checkpoint(str(folder))
    assert model.config == config
    diffs = [max_diff(a, b) for a, b in zip(ours(model, variables, images, tokens), expected)]
    print(f"transformers {name} ({config.vision.layers} layers): max |image embedding diff| {diffs[0]:.2e}, "
          f"|text embedding diff| {diffs[1]:.2e}, |logit diff| {diffs[2]:.2e}")
    assert max(diffs) <= TOLERANCE


def test_export_hf_round_trip(reference, scratch):
    """Exported folders load in transformers with every tensor equal to the original, and
    back in clip_jax with every parameter equal."""
    name, config, folder, images, tokens, expected, state = reference
    model, variables = clip_jax.load_checkpoint(str(folder))
    clip_jax.export_checkpoint(model, variables, str(scratch / "out"), "hf")
    loaded = transformers.SiglipModel.from_pretrained(str(scratch / "out")).eval()
    theirs = {k: v.numpy() for k, v in loaded.state_dict().items()}
    assert set(theirs) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(theirs[key], value, err_msg=key)
    del loaded
    again, reloaded = clip_jax.load_checkpoint(str(scratch / "out"))
    assert again.config == config
    for a, b in zip(jax_leaves(variables), jax_leaves(reloaded)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reference", ["siglip-base-patch16-224"], indirect=True)
def test_sharded_folder(reference, scratch):
    import safetensors.torch

    name, config, folder, images, tokens, expected, state = reference
    # Shards written the way save_pretrained(max_shard_size=...) writes them.
    keys = sorted(state)
    shards = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for index, part in enumerate(shards, start=1):
        file = f"model-{index:05d}-of-00002.safetensors"
        safetensors.torch.save_file({k: torch.from_numpy(np.ascontiguousarray(state[k])) for k in part},
                                    str(scratch / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    (scratch / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (scratch / "config.json").write_text((folder / "config.json").read_text())
    model, variables = clip_jax.load_checkpoint(str(scratch))
    assert max(max_diff(a, b) for a, b in zip(ours(model, variables, images, tokens), expected)) <= TOLERANCE


# -- big_vision .npz ----------------------------------------------------------------------


def test_big_vision_npz(reference, scratch):
    name, config, folder, images, tokens, expected, state = reference
    np.savez(scratch / "siglip.npz", **to_big_vision(state, config))
    loaded, variables = clip_jax.load_checkpoint(str(scratch / "siglip.npz"))
    # An .npz has no config: shapes give everything but the heads and the pixels a patch
    # grid was cut from (384 px at patch 14 is 27 x 27 patches, as 378 px is), which come
    # from the registered model of those shapes.  The shallow test towers match none, so
    # compare what shapes show and run the variables in the true architecture.
    shown = lambda c: dataclasses.replace(c, text=dataclasses.replace(c.text, heads=0), vision=dataclasses.replace(  # noqa: E731
        c.vision, head_width=0, image_size=c.vision.image_size // c.vision.patch_size * c.vision.patch_size))
    assert shown(loaded.config) == shown(config)
    model = clip_jax.create_model(config)
    diffs = [max_diff(a, b) for a, b in zip(ours(model, variables, images, tokens), expected)]
    print(f"big_vision .npz {name}: max |image diff| {diffs[0]:.2e}, |text diff| {diffs[1]:.2e}, "
          f"|logit diff| {diffs[2]:.2e}")
    assert max(diffs) <= TOLERANCE
    np.savez(scratch / "stacked.npz", **to_big_vision(state, config, stacked=True))
    _, stacked = clip_jax.load_checkpoint(str(scratch / "stacked.npz"))
    for a, b in zip(jax_leaves(variables), jax_leaves(stacked)):
        np.testing.assert_array_equal(a, b)


def test_published_npz_shapes_get_registered_names():
    """A full-depth .npz of a published shape loads as that name (heads, 384 px with 27 x 27
    patches of 14): checked through the shape inference alone, on zero-filled arrays."""
    from clip_jax.convert.table import expected_shapes
    from clip_jax.models.families import siglip_naming as siglip

    for name in ("siglip-so400m-patch14-384", "siglip2-base-patch16-256"):
        config = clip_jax.get_config(name)
        fake = {k: np.zeros(s, np.float32) for k, s in expected_shapes(config).items()}  # never written: no memory
        assert siglip.infer_config(fake) == config, name


def jax_leaves(variables):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(variables)]



# -- configs that are not supported -------------------------------------------------------


def test_unsupported_variants_are_named(tmp_path):
    naflex = transformers.Siglip2Config(vision_config={"num_patches": 256, "patch_size": 16})
    naflex.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type 'siglip2' .*NaFlex.*num_patches=256.*Supported: SigLIP and "
                                         r"SigLIP 2 FixRes"):
        clip_jax.load_checkpoint(str(tmp_path))
    hf = config_to_hf(clip_jax.get_config("siglip-base-patch16-224"))
    hf["vision_config"]["vision_use_head"] = False
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="vision_use_head=false"):
        clip_jax.load_checkpoint(str(tmp_path))


def test_siglip2_folder_config_is_registered(tmp_path):
    """A SigLIP 2 FixRes folder (SiglipModel, Gemma vocabulary, tokenizer.model) reads as the
    registered SigLIP 2 name, its tokenizer the Gemma kind; config only, no weights needed."""
    from clip_jax.convert import hf

    config = clip_jax.get_config("siglip2-base-patch16-256")
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(config)))
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert hf.read_config(str(tmp_path)) == config and config.text.tokenizer == "gemma"
    assert clip_jax.models.name_of(config) == "siglip2-base-patch16-256"


def test_convert_command_line_npz_to_folder(tmp_path, capsys):
    """`python -m clip_jax.convert X.npz DIR --to hf`: a big_vision file becomes a folder
    transformers loads with the same tensors; open_clip export is refused by name."""
    from clip_jax.convert.__main__ import main

    config = clip_jax.get_config("tiny-siglip")
    reference = reference_model(config, seed=5)
    state = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}
    np.savez(tmp_path / "tiny.npz", **to_big_vision(state, config))
    assert main([str(tmp_path / "tiny.npz"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert "tiny-siglip" in capsys.readouterr().out
    loaded = transformers.SiglipModel.from_pretrained(str(tmp_path / "hf"))
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key], err_msg=key)
    assert main([str(tmp_path / "tiny.npz"), str(tmp_path / "oc.safetensors"), "--to", "open_clip"]) == 2
    assert "SigLIP models export as 'hf' (a SiglipModel folder) or 'clip_jax'" in capsys.readouterr().err
