"""Nothing is lost: SIGKILL at random moments (inside steps, during asynchronous
checkpoint writes) always resumes from the last complete checkpoint and ends where an
uninterrupted run ends; SIGTERM saves and exits cleanly; training over corrupt shards completes and reports
what it skipped."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from tests.helpers.pod import checkpoint_params, logged_losses
from tests.helpers.runtime import ROOT

STEPS = 10
OVERRIDES = [f"--config.total_steps={STEPS}", "--config.checkpoint_every=1", "--config.log_every=1",
             "--config.evals=()", "--config.keep_checkpoints=2"]


def command(workdir):
    return [sys.executable, "train.py", "--config", "configs/demo.py:runlocal", "--workdir", str(workdir), *OVERRIDES]


def env():
    return {**os.environ, "XLA_FLAGS": ""}


def logged_steps(workdir):
    return sorted(logged_losses(workdir))


def test_sigkill_at_random_moments_then_resume(tmp_path):
    reference = tmp_path / "reference"
    done = subprocess.run(command(reference), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    workdir = tmp_path / "killed"
    rs = random.Random(0)
    kills = 0
    for attempt in range(3):
        process = subprocess.Popen(command(workdir), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        target = max(logged_steps(workdir) or [0]) + rs.randint(1, 3)
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and max(logged_steps(workdir) or [0]) < target:
            time.sleep(0.05)
        time.sleep(rs.uniform(0.0, 0.4))  # land inside a step or an asynchronous checkpoint write
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
    assert kills >= 2
    done = subprocess.run(command(workdir), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, theirs = checkpoint_params(workdir), checkpoint_params(reference)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, atol=1e-6, err_msg=key)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    process = subprocess.Popen(command(tmp_path) + ["--config.checkpoint_every=1000"], cwd=ROOT, env=env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not logged_steps(tmp_path):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    saved = [int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit()]
    assert saved and max(saved) < STEPS, (os.listdir(tmp_path / "checkpoints"), stderr[-3000:])


def test_training_over_corrupt_shards_completes_and_reports_skips(tmp_path):
    """Truncated tars, non-image bytes under .jpg, zero-byte files, captions of 0 and
    10,000 characters and non-UTF-8 text: training goes on and the metrics count them."""
    from clip_jax.trainer import train
    from tests.helpers.data import captioned_shards, jpeg, truncate, write_tar
    from tests.helpers.training import tiny_config

    folder = tmp_path / "shards"
    captioned_shards(str(folder), num_shards=3, per_shard=24, prefix="good")
    bad = [
        ("b0", {"jpg": b"this is not an image", "txt": b"a caption"}),
        ("b1", {"jpg": b"", "txt": b"zero-byte image"}),
        ("b2", {"jpg": jpeg(seed=1), "txt": b""}),
        ("b3", {"jpg": jpeg(seed=2), "txt": b"\xff\xfe\xfa not utf-8"}),
        ("b4", {"jpg": jpeg(seed=3), "txt": ("long " * 2000).encode()}),
        ("b5", {"jpg": jpeg(seed=4)}),
    ] + [(f"g{i}", {"jpg": jpeg(seed=10 + i), "txt": b"fine"}) for i in range(20)]
    write_tar(str(folder / "bad-000.tar"), bad)
    write_tar(str(folder / "cut-000.tar"), [(f"c{i}", {"jpg": jpeg(seed=40 + i), "txt": b"x"}) for i in range(20)])
    truncate(str(folder / "cut-000.tar"), 0.5)
    spec = f"wds:{folder}/good-{{000..002}}.tar+wds:{folder}/bad-000.tar+wds:{folder}/cut-000.tar"
    config = tiny_config(total_steps=12, log_every=12, **{"data.train": spec, "data.options.shuffle_buffer": 16})
    state = train(config, str(tmp_path / "run"))
    assert int(state.step) == 12
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    assert last["data/skipped_images"] >= 2  # not an image, zero bytes
    assert last["data/skipped_captions"] >= 3  # empty, not UTF-8, missing
    assert np.isfinite(last["loss"])
