"""WiSE-FT: the weight-space mix against the plain formula, its exact endpoints, its
errors, and `python -m clip_jax.wise_ft` end to end (its α = 0 and α = 1 rows equal the
evaluation of the two checkpoints themselves)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import clip_jax
from clip_jax.evaluation import runner
from clip_jax.wise_ft import evaluations, interpolate, load_pair, parse_alphas
from tests.helpers.runtime import ROOT


@pytest.fixture(scope="module")
def pair():
    model = clip_jax.create_model("tiny-vit")
    return model, clip_jax.init_variables(model, seed=0), clip_jax.init_variables(model, seed=1)


def test_endpoints_are_exact_and_the_middle_is_the_formula(pair):
    _, a, b = pair
    for alpha, expected in ((0.0, a), (1.0, b)):
        for got, want in zip(jax.tree.leaves(interpolate(a, b, alpha)), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(got, np.asarray(want))
    for got, x, y in zip(jax.tree.leaves(interpolate(a, b, 0.3)), jax.tree.leaves(a), jax.tree.leaves(b)):
        want = 0.7 * np.asarray(x, np.float64) + 0.3 * np.asarray(y, np.float64)
        assert got.dtype == np.asarray(x).dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_bad_alphas_and_mismatched_checkpoints_are_refused(pair, tmp_path):
    _, a, b = pair
    with pytest.raises(ValueError, match=r"alpha=1.5 is outside \[0, 1\]"):
        interpolate(a, b, 1.5)
    with pytest.raises(ValueError, match=r"alpha=-0.1 is outside"):
        parse_alphas("-0.1,0.5")
    with pytest.raises(ValueError, match=r"START:STOP:STEP"):
        parse_alphas("0:1:0")
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    trimmed = jax.tree.map(lambda x: x, b)
    del trimmed["params"]["logit_scale"]
    with pytest.raises(ValueError, match=r"only in the zero-shot one: \[.*logit_scale"):
        interpolate(a, trimmed, 0.5)
    vit = clip_jax.export_checkpoint(pair[0], a, str(tmp_path / "vit.safetensors"))
    resnet_model = clip_jax.create_model("tiny-resnet")
    resnet = clip_jax.export_checkpoint(resnet_model, clip_jax.init_variables(resnet_model),
                                        str(tmp_path / "resnet.safetensors"))
    with pytest.raises(ValueError, match=r"different architectures"):
        load_pair(vit, resnet)


def test_the_command_sweeps_scores_and_writes(pair, tmp_path):
    model, a, b = pair
    zeroshot = clip_jax.export_checkpoint(model, a, str(tmp_path / "zs.safetensors"))
    finetuned = clip_jax.export_checkpoint(model, b, str(tmp_path / "ft.safetensors"))
    out, mixed = tmp_path / "sweep.json", tmp_path / "mixed.safetensors"
    env = dict(os.environ)  # the same simulated devices as this process, so the scores compare exactly
    done = subprocess.run([sys.executable, "-m", "clip_jax.wise_ft", "--zeroshot", zeroshot, "--finetuned", finetuned,
                           "--alphas", "0,1", "--data", "demo:heldout", "--shift", "demo:val", "--templates", "{}",
                           "--batch_size", "100", "--output", str(out), "--save_alpha", "0.5", "--save", str(mixed)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "alpha | ID demo:heldout | shift demo:val | shift mean" in done.stdout
    rows = json.load(open(out))["sweep"]
    assert [r["alpha"] for r in rows] == [0.0, 1.0]
    evals = evaluations("demo:heldout", ["demo:val"], "{}", None, 100)
    for row, variables in zip(rows, (a, b)):
        direct = runner.run_evals(model, variables, evals)
        assert row["id"] == direct["eval/id/top1"] and row["shifts"] == [direct["eval/shift0/top1"]]
    _, written = clip_jax.load_checkpoint(str(mixed))
    for got, want in zip(jax.tree.leaves(written), jax.tree.leaves(interpolate(a, b, 0.5))):
        np.testing.assert_array_equal(got, want)
    done = subprocess.run([sys.executable, "-m", "clip_jax.wise_ft", "--zeroshot", zeroshot, "--finetuned", finetuned,
                           "--alphas", "0:2:0.5", "--data", "demo:heldout"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 2 and "alpha=1.5 is outside [0, 1]" in done.stderr
