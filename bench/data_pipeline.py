"""python bench/data_pipeline.py [--photos 600] [--small 1000] [--large 200] [--rounds 3] [--sets photos,small]
                                [--before PATH] [--shards DIR] [--isa native|avx2]

Training input pipelines per CPU core: clip_jax.data.train_iterator against open_clip's
WebDataset loader (open_clip_train.data.get_wds_dataset) and against a plain PIL decode,
on the same shards, batch and crop.

Data: img2dataset-like WebDataset shards written once (or reused from --shards DIR):
  photos real photographs: the sample photographs that scikit-learn and matplotlib ship
         (china.jpg, flower.jpg, grace_hopper.jpg), each example a random crop of one of
         them (40-100% of its area, any aspect from 3:4 to 16:9, 30% portrait), resized
         with Lanczos so its short side is uniform in 256-512 px, as img2dataset writes
         them, JPEG quality 90, 100 per shard;
  small  photo-like JPEGs (tests/helpers/data.photo_like: gradients, hard-edged blocks,
         noise) with the short side uniform in 256-512 px, aspect 1, 4:3, 3:2 or 16:9,
         30% portrait, quality 90, 100 per shard;
  large  the same with the short side in 800-1200 px, 20 per shard.
Captions: alt-text-like word sequences of 5-25 words.

Runners (each a fresh process pinned to one CPU, --cpu, with os.sched_setaffinity, so TF
and torch size their thread pools to it):
  clip_jax device   train_iterator(num_threads=1, train_transform="device"): what the
                    trainer consumes by default; the host decodes the crop windows and
                    the accelerator resizes them (not timed here: it runs in the step);
  clip_jax uint8    train_iterator(num_threads=1, train_transform="fast"): crops finished
                    on the host, uint8, normalised in the step;
  clip_jax float32  the same with uint8_images=False: normalised float32 crops;
  clip_jax before   (with --before PATH, a checkout of earlier clip_jax code, e.g. made by
                    `git worktree add /tmp/before COMMIT`) its train_iterator, defaults;
  PIL decode        the floor: the same JPEGs read from the shards beforehand (not timed),
                    then Image.open(...).convert("RGB") at full size, nothing else;
  open_clip         get_wds_dataset with workers=1 (one worker per core), resampled shards
                    (--dataset-resampled, so it never runs dry), batch_size as ours, open_clip's
                    train transform image_transform(224, is_train=True) (RandomResizedCrop
                    scale (0.9, 1.0), ratio (3/4, 4/3), bicubic, ToTensor, Normalize) and
                    its ViT-B-32 tokenizer.  Its DataLoader worker process is pinned with it.
All use a 224 px crop with area fraction (0.9, 1.0), as configs/common.py does.

Each run skips --warmup batches, then times --batches batches: examples / wall seconds,
and examples / CPU seconds of the runner's processes (all threads, open_clip's worker
included).  On a shared machine the wall rate counts time the core spent on other jobs;
the CPU-time rate does not, so the ratios use it.  Rounds interleave the runners; every
run is printed, then the median over rounds with the ratios against open_clip (of the
medians, and the median of each round's ratio: runners of one round ran minutes apart, so
that one cancels the machine's drift between rounds) and the time per example as a
multiple of the PIL decode's ("x decode").  The first line names the host CPU: the ratios
depend on it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from host_cpu import cpu_model  # noqa: E402

IMAGE_SIZE = 224
CROP_SCALE = (0.9, 1.0)
SETS = {"photos": (256, 512, 100), "small": (256, 512, 100), "large": (800, 1200, 20)}  # short side, per shard
WORDS = ("a photo of the old red house by a lake in summer with trees and blue sky two dogs playing on green "
         "grass stock image vintage car parked street at night close up fresh fruit wooden table kitchen interior "
         "design modern city skyline aerial view mountain landscape sunset beach people walking").split()
# --isa avx2: the vector code the libraries pick at run time held to AVX2 (oneDNN in TF,
# ATen in torch), to approximate an AVX2-only host on an AVX-512 one.  libjpeg-turbo and
# Pillow have no AVX-512 code to hold back; XLA does not run in these pipelines.
ISA_LIMITS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
VIT_B16_TRAIN_GFLOPS = 3 * 41.09  # forward + backward of ViT-B/16 per sample, from open_clip's FLOP table
H100_BF16_TFLOPS, MFU = 989.0, 0.45


# -- data --------------------------------------------------------------------------------------


def write_set(directory: str, name: str, count: int) -> str:
    """Write one image set as shards in directory/name (reused when complete); returns a brace pattern."""
    import numpy as np

    if ROOT not in sys.path:  # the tests' photo-like image generator
        sys.path.insert(0, ROOT)
    from clip_jax.data.wds_writer import ShardWriter
    from tests.helpers.data import encode, photo_like

    low, high, per_shard = SETS[name]
    sources = shipped_photographs() if name == "photos" else None
    out = os.path.join(directory, name)
    shards = -(-count // per_shard)
    pattern = os.path.join(out, f"{name}-{{00000..{shards - 1:05d}}}.tar")
    done = os.path.join(out, "complete.json")
    if os.path.exists(done) and json.load(open(done)) == {"count": count}:
        return pattern
    os.makedirs(out, exist_ok=True)
    rs = np.random.RandomState(0)
    start = time.perf_counter()
    with ShardWriter(os.path.join(out, name), samples_per_shard=per_shard) as writer:
        for i in range(count):
            short = rs.randint(low, high + 1)
            aspect = rs.choice([1.0, 4 / 3, 3 / 2, 16 / 9])
            portrait = rs.rand() < 0.3
            caption = " ".join(rs.choice(WORDS, rs.randint(5, 26)))
            if sources is not None:
                image = photograph_crop(sources[i % len(sources)], short, aspect, portrait, rs)
            else:
                long = int(round(short * aspect))
                height, width = (long, short) if portrait else (short, long)
                image = photo_like(height, width, i)
            writer.write(f"{i:07d}", {"jpg": encode(image, "JPEG", quality=90), "txt": caption})
    json.dump({"count": count}, open(done, "w"))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 2**20
    print(f"wrote {count} {name} JPEGs ({size:.0f} MiB) in {time.perf_counter() - start:.0f} s: {pattern}", flush=True)
    return pattern


def shipped_photographs():
    """The sample photographs that installed packages ship, as uint8 RGB arrays."""
    import matplotlib.cbook
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos.append(np.asarray(Image.open(f).convert("RGB")))
    return photos


def photograph_crop(photo, short: int, aspect: float, portrait: bool, rs):
    """A random crop of `photo` (40-100% of its area, as close to `aspect` as it allows),
    Lanczos-resized to a short side of `short` px."""
    import numpy as np
    from PIL import Image

    height, width = photo.shape[:2]
    area = rs.uniform(0.4, 1.0) * height * width
    target = 1 / aspect if portrait else aspect  # width / height
    crop_h = int(min(height, np.sqrt(area / target)))
    crop_w = int(min(width, crop_h * target))
    top, left = rs.randint(0, height - crop_h + 1), rs.randint(0, width - crop_w + 1)
    crop = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
    factor = short / min(crop_h, crop_w)
    size = (max(short, round(crop_w * factor)), max(short, round(crop_h * factor)))
    return np.asarray(crop.resize(size, Image.LANCZOS))


# -- one measurement, in its own process --------------------------------------------------------


def clip_jax_batches(pattern: str, batch: int, options: dict):
    from clip_jax import data

    it = data.train_iterator(f"wds:{pattern}", batch_size=batch, image_size=IMAGE_SIZE, seed=0, num_threads=1,
                             crop_scale=CROP_SCALE, **options)
    while True:
        out = next(it)
        yield out["images"] if "images" in out else out["canvas"]


def open_clip_batches(pattern: str, batch: int):
    import open_clip
    import torch
    from open_clip_train.data import get_wds_dataset

    torch.set_num_threads(1)
    args = argparse.Namespace(train_data=pattern, val_data=None, dataset_resampled=True, train_num_samples=10**9,
                              train_data_upsampling_factors=None, seed=0, batch_size=batch, world_size=1, workers=1)
    preprocess = open_clip.image_transform(IMAGE_SIZE, is_train=True, aug_cfg={"scale": CROP_SCALE})
    loader = get_wds_dataset(args, preprocess, is_train=True, tokenizer=open_clip.get_tokenizer("ViT-B-32")).dataloader
    for images, _ in loader:
        yield images


def pil_decodes(pattern: str, batch: int):
    """Batches of full-size PIL decodes of the shards' JPEGs (read into memory first)."""
    import io
    import tarfile

    from braceexpand import braceexpand
    from PIL import Image

    encoded = []
    for path in braceexpand(pattern):
        with tarfile.open(path) as tar:
            encoded += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    index = 0
    while True:
        images = []
        for _ in range(batch):
            images.append(Image.open(io.BytesIO(encoded[index % len(encoded)])).convert("RGB"))
            index += 1
        yield images


def cpu_seconds() -> float:
    """User + system CPU time of this process and its children (open_clip's loader worker)."""
    import psutil

    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me] + me.children(recursive=True))


def worker(runner: str, pattern: str, batch: int, warmup: int, batches: int) -> None:
    if runner == "open_clip":
        stream = open_clip_batches(pattern, batch)
    elif runner == "PIL decode":
        stream = pil_decodes(pattern, batch)
    else:
        options = {"device": {"train_transform": "device"}, "uint8": {"train_transform": "fast"},
                   "float32": {"train_transform": "fast", "uint8_images": False}, "before": {}}[runner.split()[-1]]
        stream = clip_jax_batches(pattern, batch, options)
    for _ in range(warmup):
        first = next(stream)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(stream)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    first = first[0] if isinstance(first, list) else first  # PIL: the first decoded image
    dtype, shape = (str(first.dtype), list(first.shape)) if hasattr(first, "dtype") else (first.mode, list(first.size))
    print(json.dumps({"examples": batches * batch, "wall_s": wall, "cpu_s": cpu, "dtype": dtype, "shape": shape}),
          flush=True)
    os._exit(0)  # do not wait for loader threads and worker processes to wind down


def per_cpu_s(result: dict) -> float:
    return result["examples"] / result["cpu_s"]


def run_worker(runner: str, pattern: str, args, batches: int, pythonpath: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", runner, "--pattern", pattern, "--batch",
               str(args.batch), "--warmup", str(args.warmup), "--batches", str(batches), "--cpu", str(args.cpu)]
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "2", **ISA_LIMITS[args.isa]}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{runner} on {pattern} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


# -- the comparison ------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=600, help="examples in the real-photograph set")
    parser.add_argument("--small", type=int, default=1000, help="examples in the 256-512 px photo-like set")
    parser.add_argument("--large", type=int, default=200, help="examples in the 800-1200 px set")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3, help="batches skipped before timing")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per run on photos and small")
    parser.add_argument("--large_batches", type=int, default=6, help="batches timed per run on the large set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU every runner is pinned to")
    parser.add_argument("--before", default=None, help="a checkout of earlier clip_jax, measured as 'clip_jax before'")
    parser.add_argument("--shards", default=None, help="keep the shards here (reused when present), not in a temp dir")
    parser.add_argument("--sets", default="photos,small")
    parser.add_argument("--isa", default="native", choices=list(ISA_LIMITS),
                        help="avx2: hold TF's and torch's vector code to AVX2 (an AVX2-only host, approximately)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pattern", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("photos", "small", "large", "batch", "warmup", "batches", "large_batches", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.worker:
        os.sched_setaffinity(0, {args.cpu})
        return worker(args.worker, args.pattern, args.batch, args.warmup, args.batches)

    runners = {name: ROOT for name in ("clip_jax device", "clip_jax uint8", "clip_jax float32", "PIL decode",
                                       "open_clip")}
    if args.before:
        if not os.path.isdir(os.path.join(args.before, "clip_jax", "data")):
            raise SystemExit(f"--before {args.before!r}: not a clip_jax checkout (no clip_jax/data in it)")
        runners["clip_jax before"] = os.path.abspath(args.before)
    sets = [s for s in args.sets.split(",") if s]
    for name in sets:
        if name not in SETS:
            raise SystemExit(f"--sets: unknown set {name!r}; valid: {', '.join(SETS)}")
    limit = "" if args.isa == "native" else f" held to {args.isa.upper()} ({', '.join(ISA_LIMITS[args.isa])})"
    print(f"host: {cpu_model()}{limit}; {os.cpu_count()} CPUs, runners pinned to CPU {args.cpu}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.shards or scratch
        patterns = {name: write_set(directory, name, getattr(args, name)) for name in sets}
        results = {(name, runner): [] for name in sets for runner in runners}
        for round_index in range(args.rounds):
            for name in sets:
                batches = args.large_batches if name == "large" else args.batches
                for runner, pythonpath in runners.items():
                    result = run_worker(runner, patterns[name], args, batches, pythonpath)
                    results[(name, runner)].append(result)
                    wall, cpu = result["examples"] / result["wall_s"], per_cpu_s(result)
                    print(f"round {round_index + 1} {name:6s} {runner:16s} {wall:7.1f} ex/s wall {cpu:7.1f} ex/CPU-s  "
                          f"{result['dtype']} {result['shape']}  (load {os.getloadavg()[0]:.2f})", flush=True)
    print("\nmedian over rounds, examples/s on one core (wall) and per CPU-second; ratio to open_clip in brackets; "
          "time per example as a multiple of the PIL decode's in braces")
    for name in sets:
        rates = {runner: (statistics.median(r["examples"] / r["wall_s"] for r in rs),
                          statistics.median(per_cpu_s(r) for r in rs))
                 for (set_name, runner), rs in results.items() if set_name == name}
        reference, decode = rates["open_clip"], rates["PIL decode"]
        for runner, (wall, cpu) in rates.items():
            paired = statistics.median(per_cpu_s(mine) / per_cpu_s(theirs) for mine, theirs in
                                       zip(results[(name, runner)], results[(name, "open_clip")]))
            print(f"{name:6s} {runner:16s} wall {wall:7.1f} [{wall / reference[0]:.2f}x]   per CPU-s {cpu:7.1f} "
                  f"[{cpu / reference[1]:.2f}x; median of per-round ratios {paired:.2f}x] "
                  f"{{{decode[1] / cpu:.2f}x decode}}")
    main_set = next(name for name in ("photos", "small", "large") if name in sets)
    per_core = statistics.median(per_cpu_s(r) for r in results[(main_set, "clip_jax device")])
    needed = H100_BF16_TFLOPS * 1e12 * MFU / (VIT_B16_TRAIN_GFLOPS * 1e9)
    print(f"\nViT-B/16 on one H100 at {MFU:.0%} MFU: {needed:,.0f} samples/s = {needed / per_core:.1f} cores at "
          f"{per_core:.0f} examples per CPU-second ({main_set} set, clip_jax device)")


if __name__ == "__main__":
    main()
