"""The pretrained table against open_clip's own (names, tags, sources, activations,
preprocessing, architectures), the transform each row names against open_clip's on
realistic images, its documented copy, and its errors."""
import dataclasses
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import clip_jax
from clip_jax.models import MODELS, get_config, resolve_config
from clip_jax.pretrained import get_pretrained, list_pretrained, locate
from clip_jax.pretrained.table import markdown_tags
from tests.helpers.runtime import ROOT

open_clip = pytest.importorskip("open_clip")
open_clip_pretrained = pytest.importorskip("open_clip.pretrained")

CLIP_ROWS = [row for row in list_pretrained()
             if row.architecture in MODELS and get_config(row.architecture).family == "clip"]


def open_clip_rows():
    """open_clip's (name, tag) -> its entry, for every name clip_jax registers."""
    return {(name, tag): entry for name, tags in open_clip_pretrained._PRETRAINED.items() if name in MODELS
            for tag, entry in tags.items()}


def test_every_row_names_a_registered_architecture():
    assert [row.spec for row in list_pretrained() if row.architecture not in MODELS] == []


def test_every_open_clip_checkpoint_clip_jax_builds_is_in_the_table():
    ours = {(row.model, row.tag) for row in CLIP_ROWS}
    theirs = set(open_clip_rows())
    assert ours == theirs, (sorted(theirs - ours), sorted(ours - theirs))
    assert len(ours) > 90


@pytest.mark.parametrize("row", CLIP_ROWS, ids=lambda r: r.spec)
def test_a_clip_row_is_open_clips(row):
    entry = open_clip_rows()[(row.model, row.tag)]
    assert row.source.hf_hub == entry["hf_hub"].rstrip("/")  # tried first, as open_clip prefers the hub
    assert row.source.files == ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if row.tag == "openai":  # OpenAI's files also by URL, which names the SHA-256
        assert row.source.url == entry["url"] and row.source.sha256 in entry["url"]
    else:
        assert row.source.url == ""
    quick = entry.get("quick_gelu", False) or open_clip.get_model_config(row.model).get("quick_gelu", False)
    assert row.act == ("quick_gelu" if quick else "gelu")
    assert np.allclose(row.preprocessing.mean, entry["mean"]) and np.allclose(row.preprocessing.std, entry["std"])
    assert row.preprocessing.resize == {"shortest": "crop", "squash": "squash"}[entry["resize_mode"]]
    assert row.preprocessing.interpolation == entry["interpolation"]
    # the architecture is open_clip's model config of that name, with the row's activation
    architecture = resolve_config({"model_cfg": open_clip.get_model_config(row.model)})
    assert dataclasses.replace(architecture, act=row.act) == dataclasses.replace(get_config(row.architecture),
                                                                                 act=row.act)


def test_siglip_rows_are_registered_siglip_architectures_read_as_hub_folders():
    rows = [row for row in list_pretrained() if row not in CLIP_ROWS]
    assert {row.model.split("/")[1].split("-")[0] for row in rows} == {"siglip", "siglip2"}
    for row in rows:
        assert row.model == f"google/{row.architecture}" == row.source.hf_hub and not row.source.files
        config = get_config(row.architecture)
        assert config.family == "siglip" and row.act == config.act == "gelu_tanh"
        assert row.preprocessing.resize == "squash" and row.preprocessing.mean == (0.5, 0.5, 0.5)
    for image in realistic_images():  # the SigLIP family's transform (transformers' processor, tested there)
        np.testing.assert_array_equal(clip_jax.preprocess(image, 224, family=rows[0].preprocessing),
                                      clip_jax.preprocess(image, 224, family="siglip"))
    assert get_pretrained("google/siglip-base-patch16-224").tag == "webli"  # one tag: none needed


def realistic_images():
    """Odd sizes and modes, as photo collections hold: portrait, landscape, a palette PNG,
    greyscale, RGBA."""
    rs = np.random.RandomState(0)
    out = [Image.fromarray(rs.randint(0, 256, (301, 217, 3), np.uint8)),
           Image.fromarray(rs.randint(0, 256, (190, 413, 3), np.uint8)).convert("P", palette=Image.ADAPTIVE),
           Image.fromarray(rs.randint(0, 256, (257, 256), np.uint8), "L"),
           Image.fromarray(rs.randint(0, 256, (230, 229, 4), np.uint8), "RGBA")]
    for i, image in enumerate(out):  # through PNG bytes, as files are
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        out[i] = Image.open(io.BytesIO(buffer.getvalue()))
    return out


@pytest.mark.parametrize("spec", ["ViT-L-14:laion2b_s32b_b82k", "ViT-H-14:dfn5b", "ViT-B-32:openai"])
def test_a_rows_preprocessing_is_open_clips_transform(spec):
    """The three kinds of transform in the table (mean/std 0.5 with a crop; CLIP's with a
    squash; CLIP's with a crop) against open_clip's own transform for that checkpoint."""
    row = get_pretrained(*spec.split(":"))
    entry = open_clip_rows()[(row.model, row.tag)]
    transform = open_clip.image_transform(224, is_train=False, mean=entry["mean"], std=entry["std"],
                                          resize_mode=entry["resize_mode"], interpolation=entry["interpolation"])
    for image in realistic_images():
        theirs = transform(image).numpy().transpose(1, 2, 0)
        ours = clip_jax.preprocess(image, 224, family=row.preprocessing)
        assert np.abs(ours - theirs).max() < 2e-5, (spec, image.mode, image.size)


def test_the_documented_table_is_the_table():
    with open(os.path.join(ROOT, "docs", "pretrained.md")) as f:
        assert f.read().endswith(markdown_tags()), "docs/pretrained.md is stale: regenerate its table (see the page)"


def test_the_table_file_is_package_data():
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert '"pretrained/*.json"' in f.read()
    with open(os.path.join(os.path.dirname(clip_jax.__file__), "pretrained", "checkpoints.json")) as f:
        assert len(json.load(f)["checkpoints"]) == len(list_pretrained())


def test_unknown_names_and_tags_list_what_is_valid():
    with pytest.raises(ValueError, match=r"no pretrained tag 'laion2b'; valid tags: openai, laion400m_e31, .*"
                                         r"laion2b_s34b_b79k"):
        clip_jax.load_pretrained("ViT-B-32", "laion2b")
    with pytest.raises(ValueError, match=r"no pretrained checkpoint named 'ViT-B32'; closest: ViT-B-32"):
        clip_jax.load_pretrained("ViT-B32", "openai")
    with pytest.raises(ValueError, match=r"ViT-B-32 has 22 pretrained tags; name one: openai, .* ViT-B-32:openai"):
        clip_jax.load_pretrained("ViT-B-32")
    with pytest.raises(FileNotFoundError, match=r"'ViT-B32:openai' does not exist.*not a pretrained NAME:TAG.*"
                                                r"close to it: ViT-B-32"):
        locate("ViT-B32:openai")
    with pytest.raises(ValueError, match=r"ViT-B-32 has no pretrained tag 'nope'"):
        clip_jax.load_checkpoint("ViT-B-32:nope")
