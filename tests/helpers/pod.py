"""A pod on one machine, for tests and bench/kill_storm.py: WebDataset shards of the demo
shapes (with corrupt samples among them), `train.py` started as several processes joined
by jax.distributed on loopback (gloo collectives), and what the runs leave behind: their
checkpoints, metrics and traces of the examples each host read."""
from __future__ import annotations

import collections
import io
import json
import os
import signal
import subprocess
import sys
import time

from tests.helpers.runtime import ROOT, free_port

BROKEN = {"jpg": b"\xff\xd8\xff\xe0 this is not a jpeg"}


def demo_shards(directory: str, num_shards: int = 8, per_shard: int = 12,
                labels: bool = False) -> tuple[str, list[str]]:
    """(wds: spec, captions of the good examples).  Each caption ends in its example's key,
    so a trace of captions says which examples were read; per shard one image does not
    decode and one example has no caption (both skipped and counted by the pipeline).
    Images are the demo's PNGs but for two per shard stored as JPEGs, as web shards hold
    them: one at 80 px (crops of a 32 px model decode at 1/2 DCT scale) and one greyscale.
    labels=True: each example also has its class (demo.class_prompts index) as `.cls`,
    but for one per shard that has none (skipped and counted when training on labels)."""
    from clip_jax.data.demo import DemoDataset
    from tests.helpers.data import write_tar

    dataset = DemoDataset("train", image_size=32, num_examples=num_shards * per_shard)
    os.makedirs(directory, exist_ok=True)
    good = []
    for shard in range(num_shards):
        samples = []
        for i in range(per_shard):
            index = shard * per_shard + i
            example = dataset.example(index)
            key = f"k{index:04d}"
            caption = f"{example['caption']} {key}"
            label = {"cls": str(example["label"]).encode()} if labels and i != 9 else {}
            if i == 3:
                samples.append((key, {**BROKEN, "txt": caption.encode(), **label}))
            elif i == 7:
                samples.append((key, {"png": example["png"], **label}))
            else:
                image = {"jpg": _as_jpeg(example["png"], grey=i == 5)} if i in (0, 5) else {"png": example["png"]}
                samples.append((key, {**image, "txt": caption.encode(), **label}))
                good.append(caption)
        write_tar(os.path.join(directory, f"part-{shard:03d}.tar"), samples)
    return f"wds:{directory}/part-{{000..{num_shards - 1:03d}}}.tar", sorted(good)


def _as_jpeg(png: bytes, grey: bool) -> bytes:
    """A demo PNG as a JPEG (quality 90): upscaled to 80 px, or greyscale at its size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    image = image.convert("L") if grey else image.convert("RGB").resize((80, 80), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def environment(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


class Pod:
    """`train.py` on `hosts` processes of `devices` CPU devices each; logs in `logs`."""

    def __init__(self, args: list[str], hosts: int, devices: int, logs: str, script: str = "train.py"):
        os.makedirs(logs, exist_ok=True)
        port = free_port()
        self.processes, self.logs = [], []
        for host in range(hosts):
            multi = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", str(hosts),
                     "--process_id", str(host), "--coordinator_timeout", "120"] if hosts > 1 else []
            log = open(os.path.join(logs, f"{script.replace('.py', '')}-{len(os.listdir(logs))}-p{host}.log"), "w")
            self.logs.append(log)
            self.processes.append(subprocess.Popen([sys.executable, script, *args, *multi], cwd=ROOT,
                                                   env=environment(devices), stdout=log, stderr=subprocess.STDOUT))

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def signal(self, host: int, sig=signal.SIGKILL) -> None:
        if self.processes[host].poll() is None:
            self.processes[host].send_signal(sig)

    def kill(self) -> None:
        """What a cluster manager does when one task of a job dies: end all of them."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        self.wait(60)

    def wait(self, timeout: float) -> list[int]:
        deadline = time.time() + timeout
        try:
            for process in self.processes:
                process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            for log in self.logs:
                log.close()
        return [p.returncode for p in self.processes]

    def tail(self, chars: int = 3000) -> str:
        out = []
        for log in self.logs:
            log.flush()
            with open(log.name) as f:
                out.append(f"--- {os.path.basename(log.name)}\n{f.read()[-chars:]}")
        return "\n".join(out)


def flat_variables(variables) -> dict:
    """{'/'-path: NumPy array} of a variables tree."""
    import jax
    import numpy as np

    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]}


def checkpoint_params(path: str) -> dict:
    """flat_variables of the newest checkpoint of a workdir (or of any checkpoint file)."""
    from clip_jax.convert import read_checkpoint

    return flat_variables(read_checkpoint(str(path))[1])


def checkpoint_steps(workdir: str) -> list[int]:
    """Complete checkpoints (Orbax renames a step's folder to its number when done)."""
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def logged_losses(workdir: str) -> dict[int, float]:
    """step -> loss from metrics.jsonl (a step logged twice, before and after a resume: the later)."""
    path = os.path.join(workdir, "metrics.jsonl")
    losses = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if "loss" in record:
                    losses[record["step"]] = record["loss"]
    return losses


def wait_for(condition, timeout: float, pod: Pod | None = None, poll: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if pod is not None and not pod.alive():
            return condition()
        time.sleep(poll)
    return False


def trained_examples(segments: list[tuple[str, int, int]]) -> collections.Counter:
    """(caption, epoch) -> times trained on, from segments (trace dir, first step, last
    step): the batches of steps first..last recorded in that segment's traces."""
    counts = collections.Counter()
    for trace, first, last in segments:
        if not os.path.isdir(trace):
            continue
        for name in os.listdir(trace):
            with open(os.path.join(trace, name)) as f:
                batches = {}
                for line in f:
                    record = json.loads(line)
                    batches[record["batch"]] = record  # a batch read again after a resume: the later
            for step, record in batches.items():
                if first <= step <= last:
                    counts.update(zip(record["captions"], record["epochs"]))
    return counts
