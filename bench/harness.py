"""Shared pieces of the speed benchmarks: the open_clip name of an architecture, the
measured matmul peak of this machine, and interleaved timing of competing runners.

Interleaving matters on a shared or thermally throttled machine: each round times every
runner once, and the median over rounds is reported, so a slow spell hits all of them.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable

# The repository root, so that benches can use the tests' data generators (tests.helpers).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from clip_jax.host import configure_allocator  # noqa: E402

# Before any thread starts; the same for both frameworks since they share the process.
# CLIP_JAX_HOST_ALLOCATOR=system measures without it.
HOST_ALLOCATOR_RETAINED = configure_allocator()

# torchvision before tensorflow (via clip_jax.data) or the process segfaults with these
# wheels; open_clip imports torchvision.
try:
    import torchvision  # noqa: F401
except ImportError:  # open_clip is optional for these scripts
    pass


def open_clip_name(name: str) -> str:
    """open_clip's config name for a clip_jax model name with the same semantics:
    OpenAI's names are QuickGELU models, open_clip's hyphenated names are themselves."""
    mapping = {
        "ViT-B/32": "ViT-B-32-quickgelu",
        "ViT-B/16": "ViT-B-16-quickgelu",
        "ViT-L/14": "ViT-L-14-quickgelu",
        "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
    }
    for rn in ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64"):
        mapping[rn] = rn + "-quickgelu"
    return mapping.get(name, name)


def limit_threads(threads: int) -> None:
    """threads=1: XLA's CPU backend single-threaded (torch is set by each runner).
    Must run before jax initialises its backend."""
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    elif threads > 1:
        raise ValueError(f"--threads {threads}: XLA's CPU thread count cannot be set; use 1 or 0 (all cores)")


def add_common_arguments(parser, steps: int, rounds: int) -> None:
    """The options every comparison script has."""
    parser.add_argument("--model", default="ViT-B/32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=steps, help="calls timed per round")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--vs", default="open_clip", choices=["open_clip", "none"])
    parser.add_argument("--threads", type=int, default=0,
                        help="1: both frameworks single-threaded (pin with taskset for a quiet core); 0: all cores")


def hardware_peak() -> tuple[float | None, str]:
    """(FLOP/s, its name): the measured float32 matmul peak on a CPU, else the chip's
    dense bf16 peak times the device count (None where the chip is not in the table)."""
    import jax

    from clip_jax.train_metrics import peak_flops_per_device

    if jax.devices()[0].platform == "cpu":
        return matmul_peak("float32"), "measured fp32 matmul peak"
    per_device = peak_flops_per_device()
    return (per_device * jax.device_count() if per_device else None), "dense bf16 peak"


def backend_description() -> str:
    import jax

    device = jax.devices()[0]
    allocator = "retained" if HOST_ALLOCATOR_RETAINED else "system"
    return (f"{device.platform}:{device.device_kind} x{jax.local_device_count()}, {os.cpu_count()} host cores, "
            f"{allocator} host allocator")


def matmul_peak(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of XLA's best square matmul on this device: the machine's practical ceiling."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def torch_matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.ones(size, size)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def caption_tokens(kind: str, batch: int, order: str):
    """Token ids both sides embed or train on.  kind "random": random ids filling all 77
    positions (the same work on both sides, nothing for clip_jax to trim); "prompts":
    ImageNet class names in OpenAI's 80 templates, short as zero-shot prompts are, either
    class-major as when building a classifier (order "class_major") or random
    name/template pairs (order "sampled")."""
    import numpy as np

    if kind == "random":
        return np.random.RandomState(0).randint(1, 49406, (batch, 77)).astype(np.int32)
    from clip_jax import tokenize
    from clip_jax.evaluation.prompts import fill, shipped

    imagenet = shipped()["imagenet1k"]
    if order == "class_major":
        texts = [fill(t, name) for name in imagenet["class_names"] for t in imagenet["templates"]][:batch]
    else:
        rs = np.random.RandomState(0)
        names = rs.choice(imagenet["class_names"], batch)
        templates = rs.choice(imagenet["templates"], batch)
        texts = [fill(t, n) for t, n in zip(templates, names)]
    return tokenize(texts)


def interleaved(runners: dict[str, Callable[[], None]], rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """Median seconds per call of each runner, wall-clock ("wall") and CPU time of this
    process ("cpu"), timing `steps` calls per runner per round, the runners taking
    turns round by round.  Each runner must block until its work is done.

    On a CPU shared with other work, wall time measures the share this process got;
    CPU time (single-threaded runs) measures the work itself, so it is the steadier
    figure there."""
    samples = {name: {"wall": [], "cpu": []} for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                run()
            samples[name]["wall"].append((time.perf_counter() - wall) / steps)
            samples[name]["cpu"].append((time.process_time() - cpu) / steps)
    return {name: {kind: statistics.median(times) for kind, times in kinds.items()}
            for name, kinds in samples.items()}


def torch_sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
