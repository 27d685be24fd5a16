"""The command lines end to end: train.py on the demo config (a few steps), eval.py on
the workdir it wrote, config errors from the command line, and the zero-shot demo."""
import json
import os
import subprocess
import sys

from tests.helpers.runtime import ROOT


def run(*args, timeout=600):
    env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device, as a user's machine
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_train_then_eval_the_workdir(tmp_path):
    workdir = str(tmp_path / "demo")
    done = run("train.py", "--config", "configs/demo.py:runlocal", "--workdir", workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heldout_zeroshot/top1" in done.stdout
    output = tmp_path / "r.json"
    done = run("eval.py", "--checkpoint", workdir, "--data", "demo:heldout", "--templates", "{}",
               "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "demo" / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f if "eval/heldout_zeroshot/top1" in line][-1]
    assert json.load(open(output))["metrics"]["top1"] == logged["eval/heldout_zeroshot/top1"]


def test_unknown_config_key_is_rejected_before_training(tmp_path):
    done = run("train.py", "--config", "configs/demo.py:runlocal", "--workdir", str(tmp_path), "--config.optim.lrr=1")
    assert done.returncode != 0 and "lrr" in done.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


def test_wrong_type_for_a_config_key(tmp_path):
    done = run("train.py", "--config", "configs/demo.py:runlocal", "--workdir", str(tmp_path),
               "--config.optim.lr=fast")
    assert done.returncode != 0 and "lr" in done.stderr


def test_paper_config_smoke_run(tmp_path):
    done = run("train.py", "--config", "configs/vit_b32.py:runlocal", "--workdir", str(tmp_path),
               "--config.model=tiny-vit")
    assert done.returncode == 0, done.stderr[-3000:]


def test_zero_shot_demo_module():
    done = run("-m", "clip_jax.zero_shot_demo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "top-1 accuracy" in done.stdout
