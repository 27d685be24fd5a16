"""Parity with transformers' CLIPModel through its folder format, and export round
trips: clip_jax -> open_clip / Hugging Face / clip_jax files -> the same features."""
import gc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")

import clip_jax  # noqa: E402
from tests.helpers.oracles import max_diff, perturb_torch_model, random_inputs  # noqa: E402

TOLERANCE = 1e-4


def hf_features(model, images, tokens):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
        text = model.get_text_features(input_ids=torch.from_numpy(tokens).long())
    return np.asarray(image), np.asarray(text)


def open_clip_features(model, images, tokens):
    with torch.no_grad():
        image = model.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
        text = model.encode_text(torch.from_numpy(tokens).long()).numpy()
    return image, text


def ours(model, variables, images, tokens):
    return (np.asarray(clip_jax.encode_image(model, variables, images)),
            np.asarray(clip_jax.encode_text(model, variables, tokens)))


def hf_config_for(name: str):
    from clip_jax.models.families.clip_naming import config_to_hf

    cfg = config_to_hf(clip_jax.get_config(name), 2.6592)
    return transformers.CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"],
                                   projection_dim=cfg["projection_dim"])


@pytest.mark.parametrize("name", ["ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px", "ViT-B-32"])
def test_hf_folder_parity(tmp_path, name):
    torch.manual_seed(0)
    reference = transformers.CLIPModel(hf_config_for(name)).eval()
    perturb_torch_model(reference)
    reference.save_pretrained(tmp_path)
    model, variables = clip_jax.load_checkpoint(str(tmp_path))
    assert model.config == clip_jax.get_config(name)
    images, tokens = random_inputs(model.config, batch=1)
    expected = hf_features(reference, images, tokens)
    del reference
    gc.collect()
    image_diff, text_diff = (max_diff(a, b) for a, b in zip(ours(model, variables, images, tokens), expected))
    print(f"HF {name}: max |image diff| {image_diff:.2e}, max |text diff| {text_diff:.2e}")
    assert image_diff <= TOLERANCE and text_diff <= TOLERANCE


@pytest.fixture(scope="module")
def trained_like_vit(tmp_path_factory):
    """A perturbed open_clip ViT-B-32 (QuickGELU), its features, and its clip_jax load."""
    torch.manual_seed(3)
    reference = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    perturb_torch_model(reference, seed=3)
    path = tmp_path_factory.mktemp("src") / "src.pt"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, path)
    model, variables = clip_jax.load_checkpoint(str(path))
    images, tokens = random_inputs(model.config)
    return model, variables, images, tokens, open_clip_features(reference, images, tokens)


def test_export_open_clip_roundtrip(tmp_path, trained_like_vit):
    model, variables, images, tokens, expected = trained_like_vit
    for suffix in (".safetensors", ".pt"):
        path = clip_jax.export_checkpoint(model, variables, str(tmp_path / f"oc{suffix}"), "open_clip")
        loaded = open_clip.create_model("ViT-B-32-quickgelu", pretrained=path).eval()
        for got, want in zip(open_clip_features(loaded, images, tokens), expected):
            assert max_diff(got, want) <= TOLERANCE


def test_export_hf_roundtrip(tmp_path, trained_like_vit):
    model, variables, images, tokens, expected = trained_like_vit
    clip_jax.export_checkpoint(model, variables, str(tmp_path / "hf"), "hf")
    loaded = transformers.CLIPModel.from_pretrained(str(tmp_path / "hf")).eval()
    for got, want in zip(hf_features(loaded, images, tokens), expected):
        assert max_diff(got, want) <= TOLERANCE
    assert float(loaded.logit_scale) == pytest.approx(np.log(50.0), abs=1e-6)


def test_export_clip_jax_roundtrip(tmp_path, trained_like_vit):
    model, variables, images, tokens, expected = trained_like_vit
    path = clip_jax.export_checkpoint(model, variables, str(tmp_path / "model.safetensors"))
    again, loaded = clip_jax.load_checkpoint(path)
    assert again.config == model.config
    for got, want in zip(ours(again, loaded, images, tokens), expected):
        assert max_diff(got, want) <= TOLERANCE


def test_resnet_roundtrip_through_open_clip(tmp_path):
    """ResNets carry BatchNorm statistics; export writes them back (with
    num_batches_tracked so open_clip's strict load accepts the file)."""
    torch.manual_seed(4)
    reference = open_clip.create_model("RN50", pretrained=None, force_quick_gelu=True).eval()
    perturb_torch_model(reference, seed=4)
    torch.save(reference.state_dict(), tmp_path / "rn.pt")
    model, variables = clip_jax.load_checkpoint(str(tmp_path / "rn.pt"))
    out = clip_jax.export_checkpoint(model, variables, str(tmp_path / "rn.safetensors"), "open_clip")
    loaded = open_clip.create_model("RN50-quickgelu", pretrained=out).eval()
    images, tokens = random_inputs(model.config, batch=1)
    for got, want in zip(open_clip_features(loaded, images, tokens), open_clip_features(reference, images, tokens)):
        assert max_diff(got, want) <= TOLERANCE
    with pytest.raises(ValueError, match="no ModifiedResNet"):
        clip_jax.export_checkpoint(model, variables, str(tmp_path / "hf"), "hf")
