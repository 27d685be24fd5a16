"""Tip-Adapter against a NumPy implementation of its formula on the same features, its
grid search against brute force, Tip-Adapter-F's training, and `eval.py --task
tip_adapter` end to end (its zero-shot figure equals the zeroshot task's)."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import clip_jax
from clip_jax.evaluation import tip_adapter as tip
from clip_jax.evaluation.runner import validate
from tests.helpers.evaluation import folder_dataset
from tests.helpers.runtime import ROOT


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_tip_logits(f, w, keys, labels, classes, alpha, beta):
    """The paper's formula written out per test image and cache entry."""
    out = np.zeros((len(f), classes))
    for i, x in enumerate(f):
        out[i] = 100.0 * w @ x
        for key, label in zip(keys, labels):
            out[i, label] += alpha * np.exp(-beta * (1.0 - key @ x))
    return out


@pytest.fixture(scope="module")
def features():
    """A 4-class problem whose zero-shot weights are poor but whose cache is informative."""
    rs = np.random.RandomState(0)
    centres = unit(rs.randn(4, 16))
    cache_y = np.repeat(np.arange(4), 5)
    cache = unit(centres[cache_y] + 0.3 * rs.randn(20, 16))
    test_y = np.tile(np.arange(4), 10)
    test = unit(centres[test_y] + 0.3 * rs.randn(40, 16))
    val_y = np.tile(np.arange(4), 5)
    val = unit(centres[val_y] + 0.3 * rs.randn(20, 16))
    # Zero-shot weights as CLIP's are: close to one another (a few logits apart at scale
    # 100), and here noisy, so zero-shot is weak and the cache can correct it.
    weights = unit(unit(rs.randn(16)) + 0.03 * (centres + 1.5 * rs.randn(4, 16)))
    return cache, cache_y, test, test_y, val, val_y, weights


def test_logits_equal_the_formula(features):
    cache, cache_y, test, _, _, _, weights = features
    values = np.eye(4)[cache_y]
    for alpha, beta in ((1.0, 1.0), (2.5, 5.5), (0.1, 0.1)):
        got = tip.tip_logits(jnp.asarray(test, jnp.float32), jnp.asarray(weights, jnp.float32),
                             jnp.asarray(cache, jnp.float32), jnp.asarray(values, jnp.float32), alpha, beta)
        np.testing.assert_allclose(np.asarray(got), numpy_tip_logits(test, weights, cache, cache_y, 4, alpha, beta),
                                   rtol=1e-5, atol=1e-4)


def test_search_is_the_grid_argmax(features):
    cache, cache_y, _, _, val, val_y, weights = features
    values = np.eye(4)[cache_y]
    alpha, beta, accuracy = tip.search(jnp.asarray(val, jnp.float32), val_y, jnp.asarray(weights, jnp.float32),
                                       jnp.asarray(cache, jnp.float32), jnp.asarray(values, jnp.float32))
    best = (-1.0, None)
    for b in tip.BETAS:
        for a in tip.ALPHAS:
            acc = np.mean(np.argmax(numpy_tip_logits(val, weights, cache, cache_y, 4, a, b), axis=1) == val_y)
            if acc > best[0] + 1e-9:
                best = (acc, (a, b))
    assert accuracy == pytest.approx(best[0]) and (alpha, beta) == pytest.approx(best[1])


def test_the_cache_helps_where_zero_shot_is_poor(features):
    cache, cache_y, test, test_y, val, val_y, weights = features
    plain = tip.tip_adapter(cache, cache_y, test, test_y, weights.T, 4, fine_tune=False)
    assert (plain["tip_alpha"], plain["tip_beta"], plain["searched"]) == (1.0, 1.0, False)  # the paper's start
    found = tip.tip_adapter(cache, cache_y, test, test_y, weights.T, 4, val_x=val, val_y=val_y, epochs=5)
    expected = np.mean(np.argmax(numpy_tip_logits(test, weights, cache, cache_y, 4, found["tip_alpha"],
                                                  found["tip_beta"]), axis=1) == test_y) * 100
    assert found["tip_top1"] == pytest.approx(expected)
    assert found["zeroshot_top1"] == pytest.approx(np.mean(np.argmax(test @ weights.T, axis=1) == test_y) * 100)
    assert found["tip_top1"] > found["zeroshot_top1"]
    assert 0 <= found["tip_f_top1"] <= 100 and found["searched"]
    with pytest.raises(ValueError, match=r"train labels range 0..3 does not fit 3 classes"):
        tip.tip_adapter(cache, cache_y, test, test_y % 3, weights[:3].T, 3)


def test_trained_keys_fit_the_cache_better(features):
    cache, cache_y, _, _, _, _, weights = features
    values = jnp.asarray(np.eye(4)[cache_y], jnp.float32)
    keys, w = jnp.asarray(cache, jnp.float32), jnp.asarray(weights, jnp.float32)

    def loss(k):
        logits = np.array(tip.tip_logits(keys, w, k, values, 1.0, 1.0))
        logits -= logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(20), cache_y]))

    trained = tip.train_keys(keys, values, w, 1.0, 1.0, epochs=30)
    assert loss(trained) < loss(keys)


def test_bad_specs_fail_before_features():
    with pytest.raises(ValueError, match=r"tip_adapter needs train_data"):
        validate([{"name": "t", "task": "tip_adapter", "data": "demo:val"}])
    with pytest.raises(ValueError, match=r"kshot must be positive"):
        validate([{"name": "t", "task": "tip_adapter", "data": "demo:val", "train_data": "demo:val", "kshot": -1}])


def test_eval_command_reports_zero_shot_tip_adapter_and_the_probe(tmp_path):
    model = clip_jax.create_model("tiny-vit")
    checkpoint = clip_jax.export_checkpoint(model, clip_jax.init_variables(model, 0),
                                            str(tmp_path / "tiny.safetensors"), "open_clip")
    train = folder_dataset(str(tmp_path / "train"), classes=3, per_class=6, seed=1)
    val = folder_dataset(str(tmp_path / "val"), classes=3, per_class=4, seed=3)
    test = folder_dataset(str(tmp_path / "test"), classes=3, per_class=6, seed=2)

    def run(*args):
        out = tmp_path / f"{args[0]}.json"
        done = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--checkpoint", checkpoint, "--task",
                               *args, "--data", test, "--templates", "a photo of {}.", "--output", str(out)],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.load(open(out))["metrics"]

    metrics = run("tip_adapter", "--train_data", train, "--val_data", val, "--kshot", "4")
    assert metrics["cache_size"] == 12 and metrics["kshot"] == 4 and metrics["searched"]
    for key in ("zeroshot_top1", "tip_top1", "tip_f_top1", "linear_probe_top1"):
        assert 0 <= metrics[key] <= 100, key
    assert metrics["zeroshot_top1"] == run("zeroshot")["top1"]
