"""Kill storm: a multi-process training run killed again and again until it completes,
then compared with an uninterrupted run of the same command.

    python bench/kill_storm.py --kills 20 [--hosts 2] [--seed 0] [--workdir DIR]

`train.py` runs as --hosts processes (one CPU device each, jax.distributed on loopback,
gloo collectives) on WebDataset shards of the demo shapes written here, with corrupt
samples among them, a checkpoint every 2 steps and a retrieval evaluation every 6.  Each
round picks a moment at random (inside a step, while a checkpoint is being written, while
an evaluation runs) and a host at random, and either SIGKILLs that host (then, as a
cluster manager would, the others) or sends it SIGTERM alone (a preemption: all hosts must
save the same step and exit cleanly).  The command is then started again.  After --kills
rounds the run is left to finish.

Prints each round, then: kills survived by kind, restarts, and the largest difference
between the final parameters and the uninterrupted run's (exact resume: 0 up to float
rounding of a different number of compilations).
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the tests' pod helpers
    sys.path.insert(0, ROOT)

from tests.helpers.pod import Pod, checkpoint_params, checkpoint_steps, demo_shards, logged_losses, wait_for  # noqa: E402

MOMENTS = ("mid-step", "mid-save", "mid-evaluation", "preemption")
TIMEOUT = 600


def command(workdir: str, spec: str, steps: int) -> list[str]:
    evals = f"({{'name': 'shards', 'task': 'retrieval', 'data': '{spec}', 'batch_size': 8}},)"
    return ["--config", "configs/demo.py:runlocal", "--workdir", workdir, f"--config.data.train={spec}",
            f"--config.total_steps={steps}", "--config.batch_size=16", "--config.checkpoint_every=2",
            "--config.eval_every=6", f"--config.evals={evals}", "--config.log_every=1",
            "--config.keep_checkpoints=3", "--config.optim.lr=0.002", "--config.optim.warmup_steps=2",
            "--config.data.options.units_per_block=1", "--config.data.options.shuffle_buffer=16"]


def strike(pod: Pod, workdir: str, moment: str, rng: random.Random) -> bool:
    """Wait for `moment`, then kill; False if the run ended first."""
    folder = os.path.join(workdir, "checkpoints")
    start_step = max(logged_losses(workdir) or [0])
    if moment == "mid-save":
        reached = wait_for(lambda: os.path.isdir(folder) and any("tmp" in n for n in os.listdir(folder)),
                           TIMEOUT, pod, 0.005)
    elif moment == "mid-evaluation":  # evaluation runs right after the save of a multiple of 6
        saved = set(checkpoint_steps(workdir))
        reached = wait_for(lambda: any(s % 6 == 0 and s not in saved for s in checkpoint_steps(workdir)), TIMEOUT,
                           pod, 0.01)
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        reached = wait_for(lambda: max(logged_losses(workdir) or [0]) > start_step, TIMEOUT, pod)
        time.sleep(rng.uniform(0.0, 0.8))
    if not reached or not pod.alive():
        return False
    host = rng.randrange(len(pod.processes))
    if moment == "preemption":
        pod.signal(host, signal.SIGTERM)
        codes = pod.wait(TIMEOUT)
        if codes != [0] * len(codes):
            raise SystemExit(f"SIGTERM to host {host}: exit codes {codes}\n{pod.tail()}")
    else:
        pod.signal(host, signal.SIGKILL)
        pod.kill()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder, deleted at the end")
    args = parser.parse_args()
    root = args.workdir or tempfile.mkdtemp(prefix="kill_storm_")
    rng = random.Random(args.seed)
    spec, _ = demo_shards(os.path.join(root, "shards"))
    steps = max(12, 3 * args.kills)
    started = time.time()

    reference = os.path.join(root, "reference")
    pod = Pod(command(reference, spec, steps), args.hosts, 1, os.path.join(root, "logs"))
    if pod.wait(TIMEOUT * 3) != [0] * args.hosts:
        raise SystemExit(f"the uninterrupted run failed\n{pod.tail()}")
    print(f"uninterrupted run: {steps} steps on {args.hosts} hosts in {time.time() - started:.0f} s", flush=True)

    workdir = os.path.join(root, "storm")
    survived, restarts = collections.Counter(), 0
    storm_start = time.time()
    while True:
        pod = Pod(command(workdir, spec, steps), args.hosts, 1, os.path.join(root, "logs"))
        resumed_from = max(checkpoint_steps(workdir) or [0])
        if sum(survived.values()) >= args.kills:
            codes = pod.wait(TIMEOUT * 3)
            if codes != [0] * args.hosts:
                raise SystemExit(f"the final run failed: {codes}\n{pod.tail()}")
            break
        moment = rng.choice(MOMENTS)
        if not strike(pod, workdir, moment, rng):
            codes = pod.wait(TIMEOUT)
            if codes == [0] * args.hosts and max(logged_losses(workdir) or [0]) == steps:
                print("the run completed before the next kill", flush=True)
                break
            raise SystemExit(f"the run died by itself: {codes}\n{pod.tail()}")
        survived[moment] += 1
        restarts += 1
        print(f"kill {sum(survived.values()):2d}: {moment:14s} resumed from step {resumed_from:3d}, "
              f"newest checkpoint now {max(checkpoint_steps(workdir) or [0]):3d}", flush=True)

    ours, theirs = checkpoint_params(workdir), checkpoint_params(reference)
    worst = max(float(abs(ours[k] - theirs[k]).max()) for k in theirs)
    print(f"\nkills survived: {sum(survived.values())} ({', '.join(f'{k} {v}' for k, v in sorted(survived.items()))})")
    print(f"restarts: {restarts}; storm wall time {time.time() - storm_start:.0f} s; "
          f"final step {max(logged_losses(workdir))} of {steps}")
    print(f"largest parameter difference from the uninterrupted run: {worst:.3g}")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
