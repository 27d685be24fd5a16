"""Shipped class names and templates, and how templates and class names are resolved."""
import hashlib
import json

import pytest

from clip_jax.evaluation import prompts


def sha(lines):
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_imagenet_lists_match_the_notebook():
    entry = prompts.shipped()["imagenet1k"]
    names, templates = entry["class_names"], entry["templates"]
    assert len(names) == 1000 and len(set(names)) == 998
    assert sha(names) == "571ae1c583b4be7da87519494c52bf405a46af05d5815627c7a0dee997068b60"
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}." and templates[-1] == "a tattoo of the {}."
    assert sha(templates) == "4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af"
    simple = prompts.resolve_templates("imagenet_simple")
    assert simple == ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                      "a {} in a video game.", "art of the {}.", "a photo of the small {}."]
    assert prompts.resolve_class_names("imagenet") == names


# (key, classes, templates): OpenAI's data/prompts.md, the class and template counts of the paper's datasets.
PAPER_COUNTS = [("birdsnap", 500, 1), ("cifar10", 10, 18), ("cifar100", 100, 18), ("clevr_count_all", 8, 1),
                ("caltech101", 102, 34), ("country211", 211, 5), ("dtd", 47, 8), ("eurosat", 10, 3),
                ("fgvc_aircraft", 100, 2), ("fer2013", 7, 6), ("flowers", 102, 1), ("food101", 101, 1),
                ("gtsrb", 43, 3), ("hateful_memes", 2, 1), ("kitti_closest_vehicle_distance", 4, 1),
                ("kinetics700", 700, 28), ("mnist", 10, 1), ("pets", 37, 1), ("voc2007", 20, 1), ("pcam", 2, 1),
                ("resisc45", 45, 18), ("renderedsst2", 2, 1), ("stl10", 10, 2), ("sun397", 397, 2),
                ("cars", 196, 8), ("ucf101", 101, 48)]


@pytest.mark.parametrize("key,classes,templates", PAPER_COUNTS)
def test_paper_datasets_shipped(key, classes, templates):
    entry = prompts.shipped()[key]
    assert entry["source"].startswith("OpenAI openai/CLIP@d05afc4 data/prompts.md")
    assert len(entry["class_names"]) == classes and len(entry["templates"]) == templates
    assert all("{}" in t for t in entry["templates"])
    assert prompts.resolve_class_names(key) == entry["class_names"]
    assert prompts.resolve_templates(key) == entry["templates"]


def test_paper_lists_match_prompts_md():
    """All 26 datasets' lists hash to what data/make_prompts.py read from the pinned
    prompts.md (sha256 f98d2d25...), and spot checks of known examples."""
    shipped = prompts.shipped()
    keys = sorted(k for k, v in shipped.items() if v["source"].startswith("OpenAI openai/CLIP"))
    assert keys == sorted(k for k, _, _ in PAPER_COUNTS)
    blob = json.dumps({k: [shipped[k]["class_names"], shipped[k]["templates"]] for k in keys}, sort_keys=True,
                      ensure_ascii=False)
    assert (
        hashlib.sha256(blob.encode()).hexdigest() == "ae30545830357fff48a365a9f81501e713f93c18a9f1625e184f449a9e5aacc1"
    )
    assert shipped["pets"]["templates"] == ["a photo of a {}, a type of pet."]
    assert shipped["food101"]["templates"] == ["a photo of {}, a type of food."]
    assert shipped["mnist"]["templates"] == ['a photo of the number: "{}".']
    assert shipped["country211"]["templates"][0] == "a photo i took in {}."
    assert (
        shipped["cifar10"]["templates"][0] == "a photo of a {}." and shipped["cifar10"]["class_names"][0] == "airplane"
    )
    assert shipped["birdsnap"]["class_names"][0] == "Acadian Flycatcher"
    # FER2013: several names for some classes (synonyms), in FER's label order
    assert shipped["fer2013"]["class_names"][3] == ["happy", "smiling"]
    assert prompts.resolve_class_names("fer2013")[6] == ["neutral", "bored"]
    # CLIP_benchmark's differing versions are kept beside OpenAI's
    assert shipped["pcam_clip_benchmark"]["templates"] == [
        "a histopathology slide showing {}",
        "histopathology image of {}",
    ]
    assert len(shipped["pets_clip_benchmark"]["class_names"]) == 37
    for key, entry in shipped.items():
        assert entry["source"] and all("{}" in t for t in entry.get("templates", [])), key


def test_class_subsets():
    subsets = prompts.shipped_subsets()
    blob = json.dumps({k: [v["indices"], v["wnids"]] for k, v in subsets.items()}, sort_keys=True)
    assert (
        hashlib.sha256(blob.encode()).hexdigest() == "5713c05f9259b480492b76c1091e2998d64af82c10d065b8346647d1a68be4ae"
    )
    for key in ("imagenet_a", "imagenet_r"):
        indices, wnids = prompts.resolve_class_subset(key)
        assert len(indices) == 200 and indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] < 1000
    assert prompts.resolve_class_subset("imagenet_r")[0][:10] == [1, 2, 4, 6, 8, 9, 11, 13, 22, 23]
    assert prompts.resolve_class_subset("imagenet_a")[0][:5] == [6, 11, 13, 15, 17]
    assert prompts.resolve_class_subset([3, 1]) == ([3, 1], None)
    with pytest.raises(ValueError, match="distinct non-negative"):
        prompts.resolve_class_subset([1, 1])
    with pytest.raises(ValueError, match="neither a shipped subset"):
        prompts.resolve_class_subset("imagenet_z")


def test_class_subset_wnids_are_tfds_labels():
    """The indices point at the subsets' wnids in TFDS's ImageNet label order (the label
    space of TFDS's imagenet_a and imagenet_r); read offline from the package."""
    tfds = pytest.importorskip("tensorflow_datasets")
    names = tfds.builder("imagenet_a", data_dir="/nonexistent").info.features["label"].names
    assert len(names) == 1000
    for key, entry in prompts.shipped_subsets().items():
        assert [names[i] for i in entry["indices"]] == entry["wnids"], key


def test_template_sources(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a {} here\n\nthe {} there\n")
    assert prompts.resolve_templates(str(path)) == ["a {} here", "the {} there"]
    js = tmp_path / "t.json"
    js.write_text(json.dumps(["x {}"]))
    assert prompts.resolve_templates(str(js)) == ["x {}"]
    assert prompts.resolve_templates("a photo of a {}.") == ["a photo of a {}."]
    assert prompts.resolve_templates(("{}",)) == ["{}"]
    assert prompts.fill('a photo of the number: "{}". {x}', "7") == 'a photo of the number: "7". {x}'


def test_bad_templates(tmp_path):
    with pytest.raises(ValueError, match="must contain '\\{\\}'"):
        prompts.resolve_templates(["a photo of a cat"])
    with pytest.raises(ValueError, match="not a shipped key"):
        prompts.resolve_templates("a photo without a slot")
    path = tmp_path / "t.txt"
    path.write_text("a {} ok\nno slot\n")
    with pytest.raises(ValueError, match="no slot"):
        prompts.resolve_templates(str(path))
    with pytest.raises(ValueError, match="no prompt templates"):
        prompts.resolve_templates([])
    with pytest.raises(ValueError, match="no class names"):
        prompts.resolve_class_names("dsprites_label_orientation")
    with pytest.raises(ValueError, match="a name or a non-empty list"):
        prompts.resolve_class_names(["cat", []])
