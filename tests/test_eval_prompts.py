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


# (key, classes or None when not shipped, templates): counts of CLIP_SPEC.md section 6
# where CLIP_benchmark's lists agree with OpenAI's prompts.md.
PAPER_COUNTS = [("cifar10", None, 18), ("cifar100", None, 18), ("caltech101", 102, 34), ("country211", 211, 5),
                ("dtd", None, 8), ("eurosat", 10, 3), ("fgvc_aircraft", None, 2), ("fer2013", 7, 6),
                ("flowers", 102, 1), ("food101", None, 1), ("gtsrb", 43, 3), ("kitti_closest_vehicle_distance", 4, 1),
                ("mnist", 10, 1), ("pets", 37, 1), ("voc2007", None, 1), ("stl10", None, 2), ("sun397", None, 2),
                ("cars", None, 8), ("clevr_count_all", 8, 1), ("renderedsst2", None, 1)]


@pytest.mark.parametrize("key,classes,templates", PAPER_COUNTS)
def test_shipped_counts(key, classes, templates):
    entry = prompts.shipped()[key]
    assert len(entry.get("class_names", [])) == (classes or 0)
    assert len(entry["templates"]) == templates
    assert all("{}" in t for t in entry["templates"])
    assert prompts.shipped()["pets"]["templates"] == ["a photo of a {}, a type of pet."]


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
        prompts.resolve_class_names("cifar10")
