"""Training metrics: a JSON-lines file and TensorBoard events in the workdir (process 0
only), a tqdm progress bar with ETA on a terminal and plain log lines otherwise, and
the accelerator peak FLOP/s used for MFU.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Mapping

import jax

# Dense bf16 peak FLOP/s per device, by jax's device_kind prefix.
PEAK_FLOPS = {
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops_per_device(override: float = 0.0) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for prefix, flops in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return flops
    return None


class MetricsWriter:
    def __init__(self, workdir: str, total_steps: int, enabled: bool = True):
        self.enabled = enabled
        self.total_steps = total_steps
        self._bar = None
        self._summary = None
        self._jsonl = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        try:
            import tensorflow as tf

            self._tf = tf
            self._summary = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        except ImportError:  # pragma: no cover - tensorflow is a dependency
            self._summary = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._summary is not None:
            with self._summary.as_default(step=step):
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key not in ("step", "time"):
                        self._tf.summary.scalar(key, value)
            self._summary.flush()
        shown = {k: record[k] for k in ("loss", "i2t_accuracy", "logit_scale", "examples_per_s") if k in record}
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=True)
        else:
            logging.info("step %d/%d %s", step, self.total_steps,
                         " ".join(f"{k}={v:.4g}" for k, v in shown.items()))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._summary is not None:
            self._summary.close()


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def summary(workdir: str) -> str:
    """A few lines on a finished run from its metrics.jsonl: the loss at the first and
    last logged steps and the newest evaluation results."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return f"no metrics in {workdir}"
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train_records = [r for r in records if "loss" in r]
    lines = []
    if train_records:
        first, last = train_records[0], train_records[-1]
        lines.append(f"loss {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step {last['step']}")
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    if evals:
        newest = evals[-1]
        lines.append(f"evaluation at step {newest['step']}:")
        lines.extend(f"  {k[len('eval/'):]}: {v:.2f}" for k, v in newest.items() if k.startswith("eval/"))
    return "\n".join(lines)
