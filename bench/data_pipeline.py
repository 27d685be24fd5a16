"""python bench/data_pipeline.py [--images 2000] [--batch 64] [--batches 25]

Throughput of clip_jax.data.train_iterator, the whole training input pipeline (tar
reading, JPEG decode inside the random crop window, bicubic resize, normalisation, BPE
tokenisation, batching), on
  1. JPEG WebDataset shards written to a temp dir: synthetic photo-like images of about
     300 x 400 (smooth gradients, hard-edged blocks, noise), JPEG quality 90, 224 px output;
  2. the demo data (demo:train, 32 px PNGs generated on the fly), 32 px output.
Each is run with tf.data's private thread pool at 1 thread and at os.cpu_count() threads
(options.threading.private_threadpool_size; map/interleave parallelism AUTOTUNE).  After
a warm-up of 3 batches it times --batches batches.  Then it prints how many such cores
would keep up with a ViT-B/16 train step on one H100 and one TPU v4 chip, using the best
examples/s per core (rate / threads) of the JPEG runs.  Load averages are printed because
on a shared machine the extra threads may find no free core.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from clip_jax import data  # noqa: E402
from clip_jax.data.wds_writer import ShardWriter  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from data_helpers import encode, photo_like  # noqa: E402

VIT_B16_FORWARD_GFLOPS = 41.09  # image + text, per sample (open_clip's table)
TRAIN_STEP_FACTOR = 3  # forward + backward ~ 3x forward
PEAK_TFLOPS = {"H100 SXM (dense bf16)": 989.0, "TPU v4 chip (bf16)": 275.0}
MFU = 0.45  # assumed model FLOPs utilisation


def make_shards(directory: str, count: int) -> str:
    rs = np.random.RandomState(0)
    with ShardWriter(os.path.join(directory, "bench"), samples_per_shard=max(1, count // 8)) as writer:
        for i in range(count):
            height, width = 300 + rs.randint(-20, 21), 400 + rs.randint(-30, 31)
            caption = f"a photo of {rs.randint(1, 9)} things number {i} on a table, with light from the left"
            writer.write(f"{i:07d}", {"jpg": encode(photo_like(height, width, i), "JPEG", quality=90), "txt": caption})
    return writer.spec()


def measure(spec: str, image_size: int, batch: int, batches: int, threads: int) -> float:
    with data.train_iterator(spec, batch_size=batch, image_size=image_size, seed=0, shuffle_buffer=1000, num_threads=threads) as it:
        for _ in range(3):
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=25)
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    print(f"os.cpu_count() = {cores}; load average before the run: {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        spec = make_shards(directory, args.images)
        print(f"wrote {args.images} JPEGs (~300x400) in {time.perf_counter() - start:.1f} s: {spec}", flush=True)
        for name, source, size in (("JPEG wds, 224 px", spec, 224), ("demo:train, 32 px", "demo:train", 32)):
            for threads in sorted({1, cores}):
                rate = measure(source, size, args.batch, args.batches, threads)
                results[(name, threads)] = rate
                print(f"{name:20s} (load {os.getloadavg()[0]:.2f}) threads={threads}: {rate:8.1f} examples/s = {rate / threads:8.1f} per core", flush=True)
    # Per core: the best of rate / threads (on a shared machine extra threads may find no free core).
    per_core = max(results[("JPEG wds, 224 px", t)] / t for t in {1, cores})
    step_gflops = TRAIN_STEP_FACTOR * VIT_B16_FORWARD_GFLOPS
    print(f"\nViT-B/16 train step: {TRAIN_STEP_FACTOR} x {VIT_B16_FORWARD_GFLOPS} GFLOPs = {step_gflops:.2f} GFLOPs per sample; assumed MFU {MFU:.0%}")
    for chip, peak in PEAK_TFLOPS.items():
        samples = peak * 1e12 * MFU / (step_gflops * 1e9)
        print(f"{chip}: {peak:.0f} TFLOP/s x {MFU:.0%} / {step_gflops:.2f} GFLOPs = {samples:,.0f} samples/s "
              f"-> {samples / per_core:.1f} cores at {per_core:.1f} examples/s/core (JPEG 224 px)")


if __name__ == "__main__":
    main()
