"""The figures a lent accelerator is for, in one run (bench/accelerator.sh wraps it):

    python bench/accelerator.py [--budget 420] [--record bench/RESULTS.md]
    python bench/accelerator.py --smoke     # tiny-vit on whatever JAX has (checks the script on a CPU)

On the local device(s), bf16 compute, the full train step (forward, loss, backward,
AdamW) on uint8 images and 77-token captions:
  1. ViT-B/32, ViT-B/16 and ViT-L/14, each at the largest per-device batch that fits
     (from XLA's memory analysis of a small-batch compile, then checked by compiling the
     chosen batch): examples/s and MFU against the chip's dense bf16 peak (metrics.PEAK_FLOPS);
  2. attention="cudnn" against "xla" on the ViT-B/16 step (where cuDNN can run), and
     the same step fed crop windows that it resizes itself (train_transform="device",
     the trainer's default) against finished uint8 crops;
  3. a 32,768 global batch on one device by embedding-cache accumulation (ViT-B/32,
     micro-batches of --micro_batch, remat): seconds per step and examples/s;
  4. the training input pipeline on this host's cores (generated 256-512 px JPEG shards,
     224-px crops, as the trainer feeds them: crop windows for the device to resize):
     examples/s in all and per core.
Sections that would overrun --budget seconds are skipped and named.  Each figure is
printed and, with --record, appended as a row to RESULTS.md's accelerator table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402  (sets the torchvision-before-tensorflow import order)

MODELS = ("ViT-B/32", "ViT-B/16", "ViT-L/14")
MEMORY_HEADROOM = 0.85  # of the device's memory limit, for the allocator's fragmentation


def train_step_runner(model_name: str, batch: int, dtype: str, attention: str = "auto", accumulation: int = 1,
                      remat: bool = False, devices=None, windows: bool = False):
    """(compiled step, run() that times nothing and blocks, setup) for a global batch."""
    import jax
    import numpy as np

    from clip_jax.sharding import global_batch
    from clip_jax.train_config import base_config
    from clip_jax.trainer import build, jit_train_step

    config = base_config()
    config.model, config.batch_size, config.total_steps = model_name, batch, 1000
    config.compute_dtype, config.attention, config.remat = dtype, attention, remat
    config.accumulation_steps, config.trim_text = accumulation, "never"
    if devices == 1:
        config.mesh = (("data", 1), ("fsdp", 1))
    setup = build(config)
    state = setup.init_state(jax.random.key(0, impl="rbg"))
    size = setup.model.config.vision.image_size
    rs = np.random.RandomState(0)
    host = {"tokens": harness.caption_tokens("random", batch, order="sampled")}
    if windows:  # what train_transform="device" sends: windows of 1-2.4x the output in a canvas
        from clip_jax.data.image_ops import canvas_shape

        side = canvas_shape(size)[0]
        valid = rs.randint(size, int(2.4 * size), (batch, 2)).astype(np.int32)
        host.update(canvas=rs.randint(0, 256, (batch, side, side, 3), dtype=np.uint8), valid=valid,
                    boxes=np.concatenate([np.zeros_like(valid), valid], 1).astype(np.float32))
    else:
        host["images"] = rs.randint(0, 256, (batch, size, size, 3), dtype=np.uint8)
    data = global_batch(host, setup.mesh)
    compiled = jit_train_step(setup).lower(state, data).compile()
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], data)
        jax.block_until_ready(metrics["loss"])

    return compiled, run, setup


def memory_limit() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def step_bytes(compiled) -> float:
    analysis = compiled.memory_analysis()
    return analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes \
        - analysis.alias_size_in_bytes


def largest_batch(model_name: str, dtype: str, probe: int, devices: int) -> int:
    """The largest global batch (a multiple of 32 x devices) whose step fits, from the
    memory of a `probe`-per-device compile: state bytes are fixed, temporaries grow
    linearly with the batch."""
    compiled, _, _ = train_step_runner(model_name, probe * devices, dtype)
    analysis = compiled.memory_analysis()
    limit = memory_limit()
    if not limit:
        return probe * devices
    fixed = analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
    per_example = analysis.temp_size_in_bytes / probe
    per_device = int((MEMORY_HEADROOM * limit - fixed) / per_example) // 32 * 32
    return max(32, per_device) * devices


def timed(run, steps: int) -> float:
    run()  # warm-up: allocation and autotuning
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - start) / steps


def pipeline_rate(seconds: float) -> tuple[float, int]:
    """(examples/s, host cores) of the training pipeline (crop windows) on generated JPEG shards."""
    import numpy as np

    from clip_jax import data
    from clip_jax.data.wds_writer import ShardWriter
    from tests.helpers.data import encode, photo_like

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as directory:
        rs = np.random.RandomState(0)
        with ShardWriter(os.path.join(directory, "bench"), samples_per_shard=64) as writer:
            for i in range(512):
                short = rs.randint(256, 513)
                long = int(short * rs.uniform(1.0, 1.6))
                image = photo_like(short, long, i) if i % 2 else photo_like(long, short, i)
                writer.write(f"{i:07d}", {"jpg": encode(image, "JPEG", quality=90),
                                          "txt": f"a photo of {i % 9} things on a table, light from the left"})
        with data.train_iterator(writer.spec(), batch_size=256, image_size=224, seed=0, shuffle_buffer=512,
                                 train_transform="device") as iterator:
            next(iterator)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                count += len(next(iterator)["tokens"])
            return count / (time.perf_counter() - start), cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later sections are skipped past it")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per figure")
    parser.add_argument("--probe", type=int, default=64, help="per-device batch of the memory-probe compile")
    parser.add_argument("--micro_batch", type=int, default=512, help="micro-batch of the 32k accumulation step")
    parser.add_argument("--record", default="", help="append the figures to this RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="tiny-vit, small batches: checks the script anywhere")
    args = parser.parse_args()

    import jax

    from clip_jax.flops import train_step_flops
    from clip_jax.train_metrics import peak_flops_per_device

    began = time.perf_counter()
    device = jax.devices()[0]
    devices = jax.local_device_count()
    peak = peak_flops_per_device()
    what = f"{device.platform}:{device.device_kind} x{devices}, {os.cpu_count()} host cores"
    print(f"{what}; dense bf16 peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s per device")
    models = ("tiny-vit",) if args.smoke else MODELS
    dtype = "float32" if args.smoke and device.platform == "cpu" else "bfloat16"
    rows = []

    def left() -> float:
        return args.budget - (time.perf_counter() - began)

    def record(figure: str, value: str, command: str = "bash bench/accelerator.sh") -> None:
        print(f"  {figure}: {value}")
        rows.append(f"| {datetime.date.today()} | {what} | {figure} | {value} | `{command}` |")

    batches = {}
    for name in models:
        if left() < 60:
            print(f"skipped {name}: budget spent")
            continue
        batch = 8 * devices if args.smoke else largest_batch(name, dtype, args.probe, devices)
        _, run, setup = train_step_runner(name, batch, dtype)
        seconds = timed(run, args.steps)
        batches[name] = batch
        flops = train_step_flops(setup.model, batch, 77)
        mfu = f", MFU {flops / seconds / (peak * devices):.1%}" if peak else ""
        record(f"{name} {dtype} train step, batch {batch // devices}/device, attention "
               f"{setup.model.kernels.attention_impl}", f"{batch / seconds:,.0f} examples/s{mfu}")

    name = models[-1] if args.smoke else "ViT-B/16"
    if name in batches and left() > 60:
        try:
            timings = {}
            for attention in ("xla", "cudnn"):
                _, run, _ = train_step_runner(name, batches[name], dtype, attention=attention)
                timings[attention] = timed(run, args.steps)
            record(f"{name} attention cudnn vs xla, batch {batches[name] // devices}/device",
                   f"{timings['xla'] / timings['cudnn']:.2f}x examples/s "
                   f"({batches[name] / timings['cudnn']:,.0f} vs {batches[name] / timings['xla']:,.0f})")
        except ValueError as error:  # cuDNN cannot run on this backend or dtype
            print(f"skipped attention=cudnn: {error}")
    if name in batches and left() > 60:
        timings = {}
        for windows in (False, True):
            _, run, _ = train_step_runner(name, batches[name], dtype, windows=windows)
            timings[windows] = timed(run, args.steps)
        record(f"{name} step resizing crop windows (train_transform=device) vs finished uint8 crops, batch "
               f"{batches[name] // devices}/device", f"{timings[False] / timings[True]:.3f}x examples/s "
               f"({batches[name] / timings[True]:,.0f} vs {batches[name] / timings[False]:,.0f})")

    if left() > 90:
        name, batch = ("tiny-vit", 256) if args.smoke else ("ViT-B/32", 32768)
        micro = 64 if args.smoke else min(args.micro_batch, batch)
        compiled, run, _ = train_step_runner(name, batch, dtype, accumulation=batch // micro, remat=True, devices=1)
        seconds = timed(run, 1 if not args.smoke else 2)
        record(f"{name} {batch:,} batch on one device, {batch // micro} micro-batches of {micro}, remat",
               f"{seconds:.2f} s/step = {batch / seconds:,.0f} examples/s, {step_bytes(compiled) / 2**30:.1f} GiB")
    else:
        print("skipped the 32k accumulation step: budget spent")

    if left() > 30:
        rate, cores = pipeline_rate(seconds=5.0 if args.smoke else 20.0)
        record("input pipeline, 256-512 px JPEG -> crop windows for 224 px (train_transform=device)",
               f"{rate:,.0f} examples/s on {cores} cores = {rate / cores:,.0f} per core")
    else:
        print("skipped the input pipeline: budget spent")

    print(f"done in {time.perf_counter() - began:.0f}s")
    if args.record and rows and not args.smoke:
        with open(args.record, "a") as f:
            f.write("\n".join(rows) + "\n")
        print(f"appended {len(rows)} rows to {args.record}")


if __name__ == "__main__":
    main()
