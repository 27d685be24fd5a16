"""Feature parity with open_clip for every OpenAI architecture and ViT-H-14.

Each open_clip model gets seeded random weights (every tensor moved off its initial
value), is saved as a state dict, loaded with `load_checkpoint` (architecture inferred
from the shapes), and both encoders are compared in float32.  The big models share this
one process and run one at a time with batch 1 to stay within CI's memory and time.
"""
import gc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

import clip_jax  # noqa: E402
from tests.helpers.oracles import max_diff, perturb_torch_model, random_inputs  # noqa: E402

TOLERANCE = 1e-4

# (open_clip name, quick_gelu, clip_jax name expected from inference, batch)
CASES = [
    ("RN50", True, "RN50", 2),
    ("RN101", True, "RN101", 1),
    ("RN50x4", True, "RN50x4", 1),
    ("RN50x16", True, "RN50x16", 1),
    ("RN50x64", True, "RN50x64", 1),
    ("ViT-B-32", True, "ViT-B/32", 2),
    ("ViT-B-16", True, "ViT-B/16", 1),
    ("ViT-L-14", True, "ViT-L/14", 1),
    ("ViT-L-14-336", True, "ViT-L/14@336px", 1),
    ("ViT-H-14", False, "ViT-H-14", 1),
]


def reference_features(model, images, tokens):
    with torch.no_grad():
        image = model.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
        text = model.encode_text(torch.from_numpy(tokens).long()).numpy()
    return image, text


def compare(model, variables, reference, images, tokens):
    ref_image, ref_text = reference
    image = clip_jax.encode_image(model, variables, images)
    text = clip_jax.encode_text(model, variables, tokens)
    return max_diff(image, ref_image), max_diff(text, ref_text)


@pytest.mark.parametrize("oc_name,quick_gelu,expected_name,batch", CASES, ids=[c[0] for c in CASES])
def test_open_clip_parity(tmp_path, oc_name, quick_gelu, expected_name, batch):
    torch.manual_seed(0)
    reference_model = open_clip.create_model(oc_name, pretrained=None, force_quick_gelu=quick_gelu).eval()
    perturb_torch_model(reference_model)
    path = tmp_path / "model.pt"
    torch.save(reference_model.state_dict(), path)
    model, variables = clip_jax.load_checkpoint(str(path))
    assert model.config == clip_jax.get_config(expected_name)
    images, tokens = random_inputs(model.config, batch)
    reference = reference_features(reference_model, images, tokens)
    del reference_model
    gc.collect()
    image_diff, text_diff = compare(model, variables, reference, images, tokens)
    print(f"{oc_name}: max |image diff| {image_diff:.2e}, max |text diff| {text_diff:.2e}")
    assert image_diff <= TOLERANCE and text_diff <= TOLERANCE
    assert float(variables["params"]["logit_scale"]) == pytest.approx(np.log(50.0), abs=1e-6)


def test_gelu_model_by_open_clip_name(tmp_path):
    """open_clip's "ViT-B-32" is the GELU (LAION) architecture; the name selects it."""
    torch.manual_seed(1)
    reference_model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    perturb_torch_model(reference_model, seed=1)
    path = tmp_path / "laion.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference_model.state_dict().items()}, str(path))
    model, variables = clip_jax.load_checkpoint(str(path), name="ViT-B-32")
    assert model.config.act == "gelu"
    images, tokens = random_inputs(model.config)
    diffs = compare(model, variables, reference_features(reference_model, images, tokens), images, tokens)
    assert max(diffs) <= TOLERANCE


def test_openai_style_torchscript_archive_in_fp16(tmp_path):
    """OpenAI ships TorchScript archives with fp16 weights plus three int attributes;
    they are read as data and upcast, and features match the fp32 reference."""
    torch.manual_seed(2)
    reference_model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    perturb_torch_model(reference_model, seed=2)
    reference_model.half()
    reference_model.float()  # the reference sees exactly the fp16-rounded weights
    half = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    half.load_state_dict(reference_model.state_dict())
    half.half()
    half.register_buffer("input_resolution", torch.tensor(224))
    example = (torch.zeros(1, 3, 224, 224).half(), torch.zeros(1, 77, dtype=torch.long))
    with torch.no_grad():
        traced = torch.jit.trace_module(half, {"forward": example}, check_trace=False)
    path = tmp_path / "ViT-B-32.pt"
    traced.save(str(path))
    model, variables = clip_jax.load_checkpoint(str(path))
    assert model.config == clip_jax.get_config("ViT-B/32")
    images, tokens = random_inputs(model.config)
    diffs = compare(model, variables, reference_features(reference_model, images, tokens), images, tokens)
    assert max(diffs) <= TOLERANCE
