"""Host memory of loading a large checkpoint onto a device mesh, against the model's size.

    python bench/load_memory.py [--model siglip-so400m-patch14-384] [--devices 8]
        [--folder DIR] [--keep]

Writes a checkpoint of the model (constant float32 weights in its hub layout: a Hugging
Face folder for SigLIP, open_clip's for CLIP, so the files are the real size) unless
--folder holds one, then loads it in a fresh process each way, and prints every run's
peak resident memory (VmHWM) and peak anonymous memory (RssAnon, sampled; file pages
mapped by the reader are not in it):

  streamed:  load_checkpoint(path, mesh=mesh): each tensor onto its FSDP sharding as it
             is read (what the trainer's init_from does);
  host-then-place: read_checkpoint(path) to host arrays, then jax.device_put of the whole
             tree onto the same shardings (what init_from did before).

On CPU the simulated devices' buffers are host memory, so a full sharded copy of the
model (1x its size) is part of every figure; on GPU/TPU hosts it is not.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_checkpoint(model: str, folder: str) -> int:
    """`model` with constant weights, exported in its family's hub layout (SigLIP: a
    Hugging Face folder; CLIP: open_clip's) into `folder`; returns its parameter bytes."""
    import jax
    import numpy as np

    import clip_jax
    from clip_jax.models.model import example_inputs

    config = clip_jax.get_config(model)
    net = clip_jax.create_model(config)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), *example_inputs(config))
    variables = jax.tree.map(lambda s: np.full(s.shape, 0.01, np.float32), shapes)
    clip_jax.export_checkpoint(net, variables, folder, "hf" if config.family == "siglip" else "open_clip")
    return sum(x.nbytes for x in jax.tree.leaves(variables))


def sample_memory(stop: threading.Event, peak: dict) -> None:
    while not stop.is_set():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak["anon"] = max(peak.get("anon", 0), int(line.split()[1]) * 1024)
        time.sleep(0.005)


def child(path: str, way: str, devices: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import jax

    import clip_jax
    from clip_jax.convert import read_checkpoint
    from clip_jax.convert.placement import variable_shardings
    from clip_jax.sharding import make_mesh

    mesh = make_mesh([("data", 1), ("fsdp", devices)])
    peak: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(stop, peak), daemon=True)
    sampler.start()
    start = time.time()
    if way == "streamed":
        _, variables = clip_jax.load_checkpoint(path, mesh=mesh)
    else:
        config, host = read_checkpoint(path)
        variables = jax.device_put(host, variable_shardings(config, mesh))
        del host
    jax.block_until_ready(variables)
    seconds = time.time() - start
    stop.set()
    sampler.join()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    nbytes = sum(x.nbytes for x in jax.tree.leaves(variables))
    print(json.dumps({"way": way, "seconds": seconds, "peak_rss": hwm, "peak_anon": peak.get("anon", 0),
                      "model_bytes": nbytes}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="siglip-so400m-patch14-384")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--folder", default="", help="a checkpoint written before (else a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.devices)
    folder = args.folder or tempfile.mkdtemp(prefix="load_memory_")
    try:
        if not os.path.isdir(folder) or not os.listdir(folder):
            size = write_checkpoint(args.model, folder)
            print(f"wrote {args.model} ({size / 2**30:.2f} GiB of float32 weights) to {folder}")
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
        with open("/proc/cpuinfo") as f:
            avx512 = " avx512f" in f.read()
        print(f"CPU: {cpu} ({'AVX-512' if avx512 else 'no AVX-512'}, {os.cpu_count()} cores); {args.devices} "
              "simulated devices, FSDP over all of them")
        for way in ("streamed", "host-then-place"):
            done = subprocess.run([sys.executable, __file__, "--devices", str(args.devices), "--child", folder, way],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"{way}: failed ({done.returncode}): {done.stderr[-500:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            model = result["model_bytes"]
            print(f"{way:>16}: peak RSS {result['peak_rss'] / 2**30:.2f} GiB ({result['peak_rss'] / model:.2f}x the "
                  f"model), peak anonymous {result['peak_anon'] / 2**30:.2f} GiB ({result['peak_anon'] / model:.2f}x),"
                  f" {result['seconds']:.1f}s; model {model / 2**30:.2f} GiB")
    finally:
        if not args.keep and not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
