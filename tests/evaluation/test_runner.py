"""run_evals: bad input fails before any feature is computed, suites skip missing TFDS
data, and eval.py runs the linear probe and a suite from the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import clip_jax
from clip_jax import data
from clip_jax.evaluation import features as features_lib
from clip_jax.evaluation import prompts, run_evals, runner, suite_evals, zeroshot
from clip_jax.evaluation.metrics import classification_metrics
from tests.helpers.evaluation import _png, class_image, folder_dataset, labelled_csv, labelled_wds
from tests.helpers.runtime import ROOT


@pytest.fixture(scope="module")
def tiny():
    model = clip_jax.create_model("tiny-vit")
    return model, clip_jax.init_variables(model, 0)


@pytest.fixture
def no_features(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("features were computed before the input error")
    monkeypatch.setattr(features_lib, "extract", refuse)


def test_bad_input_fails_before_features(tiny, tmp_path, no_features):
    model, variables = tiny
    spec = folder_dataset(str(tmp_path / "d"), classes=3, per_class=2)
    base = {"name": "z", "task": "zeroshot", "data": spec, "templates": "a photo of a {}."}
    with pytest.raises(ValueError, match="5 class names given in the list but .* has 3 classes"):
        run_evals(model, variables, [{**base, "class_names": ["a", "b", "c", "d", "e"]}])
    with pytest.raises(ValueError, match="must contain"):
        run_evals(model, variables, [{**base, "templates": ["a photo of a cat"]}])
    with pytest.raises(ValueError, match="image size 224 does not fit the checkpoint, which takes 32x32"):
        run_evals(model, variables, [{**base, "image_size": 224}])
    with pytest.raises(ValueError, match="task 'captioning' unknown"):
        run_evals(model, variables, [{**base, "task": "captioning"}])
    with pytest.raises(ValueError, match="needs train_data"):
        run_evals(model, variables, [{"name": "lp", "task": "linear_probe", "data": spec}])
    # the check of every evaluation comes before the first one runs
    with pytest.raises(ValueError, match="image size"):
        run_evals(model, variables, [base, {**base, "name": "z2", "image_size": 64}])


def test_class_count_of_unnamed_sources_fails_before_features(tiny, tmp_path, no_features):
    """WebDataset (.cls) and CSV (?label=) sources have no class names: their labels are
    read (no image decoded) and checked against the class names before any feature."""
    model, variables = tiny
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\ne\n")
    wds = labelled_wds(str(tmp_path / "w"), [0, 2, 1, 2, 0, 1], per_shard=4)  # two shards
    assert data.dataset_labels(wds).tolist() == [0, 2, 1, 2, 0, 1]
    base = {"name": "z", "task": "zeroshot", "templates": "a photo of a {}."}
    with pytest.raises(ValueError, match=r"5 class names given in '.*names.txt' but 'wds:.*' has labels 0..2 "
                                         r"\(3 classes\)"):
        run_evals(model, variables, [{**base, "data": wds, "class_names": str(names)}])
    csv_spec = labelled_csv(str(tmp_path / "c"), [0, 1, 3, 3])
    assert data.dataset_labels(csv_spec).tolist() == [0, 1, 3, 3]
    with pytest.raises(ValueError, match=r"3 class names given in the list but 'csv:.*' has labels 0..3 \(4 classes\)"):
        run_evals(model, variables, [{**base, "data": csv_spec, "class_names": ["x", "y", "z"]}])
    # fewer labels than names: an error too, unless the data is known to hold only some classes
    with pytest.raises(ValueError, match="check_class_count=False"):
        run_evals(model, variables, [{**base, "data": wds, "class_names": ["a", "b", "c", "d"]}])
    checked = runner.check(
        model, {**base, "data": wds, "class_names": ["a", "b", "c", "d"], "check_class_count": False}
    )
    assert checked["classes"] == ["a", "b", "c", "d"] and checked["label_map"] is None
    unlabelled = labelled_wds(str(tmp_path / "u"), [0, 1], with_cls=False)
    with pytest.raises(ValueError, match="has no labels"):
        run_evals(model, variables, [{**base, "data": unlabelled, "class_names": ["a", "b"]}])
    with pytest.raises(ValueError, match="linear probe needs labelled data"):
        run_evals(model, variables, [{"name": "lp", "task": "linear_probe", "data": wds, "train_data": unlabelled}])
    with pytest.raises(ValueError, match="must contain"):
        run_evals(model, variables, [{**base, "data": wds, "class_names": ["a", "b", "c"], "templates": ["a photo"]}])


def _subset_folder(root, classes, images):
    """A folder dataset with the given class folders and (folder index, seed) images; the
    pixels depend on the seed only."""
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for label, seed in images:
        with open(os.path.join(root, classes[label], f"{seed}.png"), "wb") as f:
            f.write(_png(class_image(seed // 10, seed)))
    return f"folder:{root}"


def test_zeroshot_class_subset(tiny, tmp_path):
    """Scoring over a subset of the class names: labels that index all classes (as TFDS's
    imagenet_a) are mapped onto the subset; labels that index the subset are used as they
    are; both give the scores of a classifier built from the subset's names alone."""
    model, variables = tiny
    names = ["zero", "one", "two", "three", "four", "five"]
    subset = [1, 3, 4]
    rows = [(c, 10 * c + i) for c in subset for i in range(3)]
    full = _subset_folder(str(tmp_path / "full"), [f"c{i}" for i in range(6)], rows)
    position = {c: i for i, c in enumerate(subset)}
    own = _subset_folder(str(tmp_path / "own"), [f"c{i}" for i in subset], [(position[c], s) for c, s in rows])
    spec = {
        "name": "s",
        "task": "zeroshot",
        "templates": ["a {} thing", "the {}"],
        "class_names": names,
        "class_subset": subset,
        "batch_size": 4,
    }
    a = run_evals(model, variables, [{**spec, "data": full}])
    b = run_evals(model, variables, [{**spec, "data": own}])
    assert a == b and a["eval/s/examples"] == 9
    feats = features_lib.extract(model, variables, data.eval_batches(own, batch_size=16, image_size=32))
    weights = zeroshot.classifier_weights(model, variables, [names[i] for i in subset], spec["templates"])
    direct = classification_metrics(zeroshot.zero_shot_scores(feats.images, weights), feats.labels, 3)
    assert a["eval/s/top1"] == pytest.approx(direct["top1"]) and "eval/s/top5" not in a  # 3 classes
    with pytest.raises(ValueError, match="must index either all 6 classes or the 3 of the subset"):
        runner.check(model, {**spec, "data": _subset_folder(str(tmp_path / "four"), ["a", "b", "c", "d"], rows[:1])})
    with pytest.raises(ValueError, match="indexes class 9 but the class names"):
        runner.check(model, {**spec, "data": full, "class_subset": [1, 9]})
    # labels read from .cls members: those outside the subset are an error before features
    with pytest.raises(ValueError, match=r"labels outside class subset .*: \[5\]"):
        runner.check(model, {**spec, "data": labelled_wds(str(tmp_path / "w"), [1, 3, 5])})


def test_shipped_imagenet_subsets(tmp_path):
    """ImageNet-A / -R: TFDS-style 1,000-class labels or a folder of the 200 wnids; the
    folder's wnids must be the subset's."""
    model = clip_jax.create_model("tiny-vit")
    root = tmp_path / "imagenet-a"
    _, wnids = prompts.resolve_class_subset("imagenet_a")
    spec = _subset_folder(str(root), wnids, [(0, 0)])
    entry = {
        "name": "a",
        "task": "zeroshot",
        "data": spec,
        "templates": "imagenet",
        "class_names": "imagenet",
        "class_subset": "imagenet_a",
    }
    checked = runner.check(model, entry)
    imagenet = prompts.resolve_class_names("imagenet")
    assert checked["label_map"] is None and len(checked["classes"]) == 200
    assert checked["classes"] == [imagenet[i] for i in prompts.resolve_class_subset("imagenet_a")[0]]
    os.rename(root / wnids[5], root / "n99999999")
    with pytest.raises(ValueError, match="not the wnids of class subset imagenet_a"):
        runner.check(model, {**entry, "data": spec})
    # a 1,000-class label space (wds .cls, as TFDS's) maps the subset's labels to 0..199
    labels = [6, 11, 988]
    checked = runner.check(model, {**entry, "data": labelled_wds(str(tmp_path / "w"), labels)})
    assert checked["label_map"][labels].tolist() == [0, 1, 199] and (checked["label_map"] >= 0).sum() == 200


def test_suite_uses_class_subsets():
    evals, skipped = suite_evals("imagenet_robustness", check_prepared=False)
    by_name = {e["name"]: e for e in evals}
    assert not skipped and by_name["imagenet_a"]["class_subset"] == "imagenet_a"
    assert by_name["imagenet_r"]["class_subset"] == "imagenet_r" and "class_subset" not in by_name["imagenet_v2"]
    assert all(e["class_names"] == "imagenet1k" for e in evals)


def test_synonym_classes(tiny):
    """A class given as several names averages the prompts of all of them."""
    model, variables = tiny
    templates = ["a photo of a {}.", "art of the {}."]
    weights = np.asarray(zeroshot.classifier_weights(model, variables, [["happy", "smiling"], "sad"], templates))
    prompts_ = [
        "a photo of a happy.",
        "art of the happy.",
        "a photo of a smiling.",
        "art of the smiling.",
        "a photo of a sad.",
        "art of the sad.",
    ]
    feats = np.array(clip_jax.encode_text(model, variables, clip_jax.tokenize(prompts_)))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    expected = np.stack([feats[:4].mean(0), feats[4:].mean(0)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(weights, expected.T, atol=1e-5)
    plain = np.asarray(zeroshot.classifier_weights(model, variables, ["happy", "sad"], templates))
    np.testing.assert_allclose(
        plain, np.asarray(zeroshot.classifier_weights(model, variables, [["happy"], "sad"], templates)), atol=1e-6
    )


def test_suite_skips_missing_datasets(tmp_path):
    evals, skipped = suite_evals("imagenet_robustness", data_dir=str(tmp_path))
    assert evals == [] and set(skipped) == {"imagenet1k", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"}
    assert all("not prepared" in reason for reason in skipped.values())
    with pytest.raises(ValueError, match="suite 'nope' unknown"):
        suite_evals("nope")


def run(*args):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "eval.py"), *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_eval_command_linear_probe_and_suite(tiny, tmp_path):
    model, variables = tiny
    checkpoint = str(tmp_path / "tiny.safetensors")
    clip_jax.export_checkpoint(model, variables, checkpoint, "open_clip")
    train = folder_dataset(str(tmp_path / "train"), classes=3, per_class=12, seed=1)
    test = folder_dataset(str(tmp_path / "test"), classes=3, per_class=6, seed=2)
    out, cache = tmp_path / "lp.json", tmp_path / "cache"
    done = run(
        "--checkpoint",
        checkpoint,
        "--task",
        "linear_probe",
        "--train_data",
        train,
        "--data",
        test,
        "--cache_dir",
        str(cache),
        "--output",
        str(out),
    )
    result = json.load(open(out))
    assert result["task"] == "linear_probe" and result["data"] == test
    metrics = result["metrics"]
    assert metrics["examples"] == 18 and metrics["train_examples"] == 36 and metrics["top1"] > 60
    assert "top1" in done.stdout and len(os.listdir(cache)) == 2  # train and test features cached

    suite_out = tmp_path / "suite.json"
    done = run(
        "--checkpoint",
        checkpoint,
        "--suite",
        "retrieval",
        "--tfds_data_dir",
        str(tmp_path / "empty"),
        "--output",
        str(suite_out),
    )
    suite = json.load(open(suite_out))
    assert suite["evaluations"] == [] and "coco_5k" in suite["skipped"] and "skipped coco_5k" in done.stdout


def test_duplicate_class_names_tie_exactly(tiny, rng):
    """A class name listed twice (OpenAI's ImageNet list has two) gets the first one's
    weights, bit for bit, and every image scores the two exactly equal: the tie goes to
    the first, whatever the matmul's rounding by position."""
    model, variables = tiny
    names = ["missile", "dog", "sunglasses", "missile", ["cat", "kitten"], "sunglasses", ["cat", "kitten"]]
    weights = np.asarray(zeroshot.classifier_weights(model, variables, names, ["a {}.", "the {}"]))
    for first, again in ((0, 3), (2, 5), (4, 6)):
        np.testing.assert_array_equal(weights[:, first], weights[:, again])
    scores = zeroshot.zero_shot_scores(rng.randn(37, model.config.embed_dim).astype(np.float32), weights)
    np.testing.assert_array_equal(scores[:, 0], scores[:, 3])
    np.testing.assert_array_equal(scores[:, 4], scores[:, 6])
    assert not np.any(scores.argmax(1) == 3)
