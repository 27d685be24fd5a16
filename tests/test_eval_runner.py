"""run_evals: bad input fails before any feature is computed, suites skip missing TFDS
data, and eval.py runs the linear probe and a suite from the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import clip_jax
from clip_jax.evaluation import features as features_lib
from clip_jax.evaluation import run_evals, suite_evals
from eval_helpers import folder_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    with pytest.raises(ValueError, match="5 class names given but .* has 3 classes"):
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


def test_suite_skips_missing_datasets(tmp_path):
    evals, skipped = suite_evals("imagenet_robustness", data_dir=str(tmp_path))
    assert evals == [] and set(skipped) == {"imagenet1k", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"}
    assert all("not prepared" in reason for reason in skipped.values())
    with pytest.raises(ValueError, match="suite 'nope' unknown"):
        suite_evals("nope")


def run(*args):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_eval_command_linear_probe_and_suite(tiny, tmp_path):
    model, variables = tiny
    checkpoint = str(tmp_path / "tiny.safetensors")
    clip_jax.export_checkpoint(model, variables, checkpoint, "open_clip")
    train = folder_dataset(str(tmp_path / "train"), classes=3, per_class=12, seed=1)
    test = folder_dataset(str(tmp_path / "test"), classes=3, per_class=6, seed=2)
    out, cache = tmp_path / "lp.json", tmp_path / "cache"
    done = run("--checkpoint", checkpoint, "--task", "linear_probe", "--train_data", train, "--data", test,
               "--cache_dir", str(cache), "--output", str(out))
    result = json.load(open(out))
    assert result["task"] == "linear_probe" and result["data"] == test
    metrics = result["metrics"]
    assert metrics["examples"] == 18 and metrics["train_examples"] == 36 and metrics["top1"] > 60
    assert "top1" in done.stdout and len(os.listdir(cache)) == 2  # train and test features cached

    suite_out = tmp_path / "suite.json"
    done = run("--checkpoint", checkpoint, "--suite", "retrieval", "--tfds_data_dir", str(tmp_path / "empty"),
               "--output", str(suite_out))
    suite = json.load(open(suite_out))
    assert suite["evaluations"] == [] and "coco_5k" in suite["skipped"] and "skipped coco_5k" in done.stdout
