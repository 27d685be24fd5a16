"""A pod that survives, tested as users run one: `train.py` started as several processes
joined by jax.distributed on loopback, reading WebDataset shards this test writes (with
corrupt samples), killed at chosen and random moments and started again.

Processes have one CPU device each, but for the 1 x 4 segment: on a 2-core machine XLA's
CPU collectives across processes take seconds per step once more than two devices take
part, so the 4-process segment is kept to the last few steps.

* Same host count: SIGKILL of every host during an asynchronous save, then at a random
  moment, and the rerun of the same commands ends with the parameters of an uninterrupted
  run.
* Another host count: SIGTERM to one host of two stops both at the same step with a
  checkpoint; the run goes on as 1 process x 4 devices (another data/fsdp split), is
  killed, and ends as 4 processes x 1 device with a configured evaluation; every example
  of the epochs read is trained on exactly once, and the loss goes on where it was.
* The rest of a pod run on its workdir: eval.py on two processes equals eval.py on one,
  `python -m clip_jax.convert` and load_checkpoint read it, and a two-host run starts
  from it with --config.init_from.

The processes are small (a tiny ViT, batches of 16) and shared between the assertions.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers.pod import (
    Pod,
    checkpoint_params,
    checkpoint_steps,
    demo_shards,
    environment,
    flat_variables,
    logged_losses,
    trained_examples,
    wait_for,
)
from tests.helpers.runtime import ROOT

STEPS = 12
TIMEOUT = 300


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return demo_shards(str(tmp_path_factory.mktemp("pod_shards")))


def train_args(workdir, spec, *extra):
    return ["--config", "configs/demo.py:runlocal", "--workdir", str(workdir), f"--config.data.train={spec}",
            f"--config.total_steps={STEPS}", "--config.batch_size=16", "--config.checkpoint_every=2",
            "--config.log_every=1", "--config.keep_checkpoints=3", "--config.evals=()", "--config.optim.lr=0.002",
            "--config.optim.warmup_steps=2", "--config.data.options.units_per_block=1",
            "--config.data.options.shuffle_buffer=16", *extra]


def run_to_end(args, hosts, devices, logs):
    pod = Pod(args, hosts, devices, logs)
    codes = pod.wait(TIMEOUT)
    assert codes == [0] * hosts, pod.tail()
    return pod


def assert_same_params(ours, theirs, atol=1e-6):
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, atol=atol, err_msg=key)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """An uninterrupted run on 2 hosts x 1 device."""
    workdir = tmp_path_factory.mktemp("pod_reference")
    run_to_end(train_args(workdir, shards[0]), 2, 1, str(workdir / "logs"))
    return workdir


def test_same_host_count_killed_twice_ends_like_an_uninterrupted_run(shards, reference, tmp_path):
    workdir, logs = tmp_path / "run", str(tmp_path / "logs")
    args = train_args(workdir, shards[0])
    # SIGKILL to every host while an asynchronous save is being written.
    pod = Pod(args, 2, 1, logs)
    folder = workdir / "checkpoints"
    in_save = wait_for(lambda: folder.is_dir() and any("tmp" in n for n in os.listdir(folder)), TIMEOUT, pod, 0.005)
    pod.kill()
    assert in_save, pod.tail()
    after_first = checkpoint_steps(workdir)
    # SIGKILL at a random moment once a later checkpoint exists.
    pod = Pod(args, 2, 1, logs)
    assert wait_for(lambda: max(checkpoint_steps(workdir) or [0]) > max(after_first or [0]), TIMEOUT, pod), pod.tail()
    time.sleep(random.Random(0).uniform(0.0, 0.5))  # inside a step or a save
    pod.kill()
    resumed_from = max(checkpoint_steps(workdir))
    assert resumed_from < STEPS
    run_to_end(args, 2, 1, logs)
    assert_same_params(checkpoint_params(workdir), checkpoint_params(reference))
    losses, expected = logged_losses(workdir), logged_losses(reference)
    assert sorted(losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses[s] for s in sorted(losses)], [expected[s] for s in sorted(expected)],
                               rtol=1e-5)


def test_another_host_count_reads_each_example_once(shards, reference, tmp_path):
    spec, good = shards
    workdir, logs = tmp_path / "run", str(tmp_path / "logs")

    def args(segment, *extra):
        return train_args(workdir, spec, f"--config.data.options.trace_dir={tmp_path / segment}", *extra)

    # 2 hosts; SIGTERM to process 1 only: both save the same step and exit cleanly.
    pod = Pod(args("a"), 2, 1, logs)
    assert wait_for(lambda: max(logged_losses(workdir) or [0]) >= 3, TIMEOUT, pod), pod.tail()
    pod.signal(1, signal.SIGTERM)
    assert pod.wait(TIMEOUT) == [0, 0], pod.tail()
    stopped = [line for log in pod.logs for line in open(log.name) if "preempted (SIGTERM): saved step" in line]
    steps = {int(line.rsplit("saved step", 1)[1].split(",")[0]) for line in stopped}
    assert len(stopped) == 2 and len(steps) == 1, pod.tail()
    first = steps.pop()
    assert checkpoint_steps(workdir)[-1] == first < STEPS

    # 1 process x 4 devices as data 2 x fsdp 2, killed once it has saved step 8 (or later:
    # the 4 processes below take seconds a step on 2 cores, so they get the last steps only).
    pod = Pod(args("b", "--config.mesh=(('data', 2), ('fsdp', 2))"), 1, 4, logs)
    assert wait_for(lambda: checkpoint_steps(workdir)[-1] >= max(STEPS - 4, first + 2), TIMEOUT, pod), pod.tail()
    pod.kill()
    second = checkpoint_steps(workdir)[-1]
    assert first < second < STEPS

    # 4 processes x 1 device to the end, evaluating (retrieval on the shards) at the last step.
    evals = f"--config.evals=({{'name': 'shards', 'task': 'retrieval', 'data': '{spec}', 'batch_size': 8}},)"
    run_to_end(args("c", evals), 4, 1, logs)

    trained = trained_examples([(str(tmp_path / "a"), 1, first), (str(tmp_path / "b"), first + 1, second),
                                (str(tmp_path / "c"), second + 1, STEPS)])
    assert sum(trained.values()) == STEPS * 16
    for epoch in (0, 1):  # 80 good examples per epoch, 192 trained on: two whole epochs
        keys = sorted(caption for caption, e in trained if e == epoch)
        assert keys == good and all(trained[(k, epoch)] == 1 for k in keys), epoch
    assert all(count == 1 for count in trained.values())
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert any("eval/shards/image_to_text_recall@1" in r for r in records), records[-1]
    last = [r for r in records if "loss" in r][-1]
    assert last["step"] == STEPS and last["data/skipped_images"] > 0 and last["data/skipped_captions"] > 0

    # The loss goes on where it was: the first step of each resumed segment is as far from
    # the uninterrupted run at that step as the run's own batch-to-batch noise allows.
    losses, expected = logged_losses(workdir), logged_losses(reference)
    noise = np.std(np.diff([expected[s] for s in range(first, STEPS + 1)]))
    for resumed in (first + 1, second + 1):
        assert abs(losses[resumed] - expected[resumed]) < 3 * noise + 0.05, (resumed, losses, expected)
    assert losses[STEPS] < expected[1] - 0.1, (losses, expected)


def test_eval_convert_and_init_from_on_a_multi_host_workdir(shards, reference, tmp_path):
    spec = shards[0]
    outputs = {}
    for hosts in (1, 2):
        out = tmp_path / f"eval{hosts}.json"
        pod = Pod(["--checkpoint", str(reference), "--task", "retrieval", "--data", spec, "--batch_size", "8",
                   "--output", str(out)], hosts, 1, str(tmp_path / "logs"), script="eval.py")
        assert pod.wait(TIMEOUT) == [0] * hosts, pod.tail()
        with open(out) as f:
            outputs[hosts] = json.load(f)["metrics"]
    assert outputs[2].keys() == outputs[1].keys() and outputs[1]
    for key, value in outputs[1].items():
        assert outputs[2][key] == pytest.approx(value, abs=1e-6), key

    exported = tmp_path / "exported.safetensors"
    command = [sys.executable, "-m", "clip_jax.convert", str(reference), str(exported), "--to", "open_clip"]
    done = subprocess.run(command, cwd=ROOT, env=environment(1), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    import clip_jax

    _, variables = clip_jax.load_checkpoint(str(exported))
    reference_params = checkpoint_params(reference)
    flat = flat_variables(variables)
    assert_same_params({k: flat[k] for k in reference_params}, reference_params)

    # A new two-host run from those weights: its first loss is the trained model's, not a fresh one's.
    workdir = tmp_path / "finetune"
    run_to_end(train_args(workdir, spec, f"--config.init_from={exported}", "--config.total_steps=1",
                          "--config.optim.lr=0"), 2, 1, str(tmp_path / "logs"))
    fresh, trained = logged_losses(reference), logged_losses(workdir)
    assert trained[1] < fresh[1] - 0.1, (trained, fresh)


def test_a_host_that_cannot_reach_the_coordinator_fails_naming_it(shards, tmp_path):
    from tests.helpers.runtime import free_port

    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    done = subprocess.run([sys.executable, "train.py", *train_args(tmp_path / "w", shards[0]),
                           "--coordinator_address", address, "--num_processes", "2", "--process_id", "1",
                           "--coordinator_timeout", "3"], cwd=ROOT, env=environment(1), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode != 0
    assert f"could not join the multi-host runtime at coordinator {address} as process 1 of 2 within 3 s" \
        in done.stderr, done.stderr[-3000:]
