"""python bench/pipeline_stages.py --shards DIR/photos [--examples 384] [--batches 12] [--cpu 0]

Where the training input pipeline's host time goes, in ms of CPU per example on one
pinned core: the JPEGs of the shards (e.g. bench/data_pipeline.py's photos set) decoded
by PIL and by TF, the crop stages alone in tf.data (one thread, batches of 64), then
train_iterator whole (tar reading, shuffling, tokenising, batching) with each transform,
with float32 output, and with the image work taken out; with each, the minor page faults
per example.  The first line names the CPU.

Each stage runs once for warm-up and is then timed twice; both timings are printed.
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from host_cpu import cpu_model  # noqa: E402

SIZE = 224
BATCH = 64


def cpu_seconds() -> float:
    import psutil

    return sum(psutil.Process().cpu_times()[:2])


def minor_faults() -> int:
    """Page faults served without I/O: fresh pages touched, e.g. by large buffers that
    malloc maps anew for every tensor (costly on some VMs)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def report(name: str, run, examples: int) -> None:
    run()
    timings, faults = [], []
    for _ in range(2):
        start, start_faults = cpu_seconds(), minor_faults()
        run()
        timings.append(1000 * (cpu_seconds() - start) / examples)
        faults.append((minor_faults() - start_faults) / examples)
    print(f"{name:58s} " + "  ".join(f"{t:5.2f}" for t in timings) + " ms/example, minor page faults/example "
          + "  ".join(f"{f:5.0f}" for f in faults), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="a folder of .tar shards of JPEGs and captions")
    parser.add_argument("--examples", type=int, default=384, help="JPEGs for the decode and crop stages")
    parser.add_argument("--batches", type=int, default=12, help="batches of 64 per train_iterator timing")
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    import tensorflow as tf
    from PIL import Image

    from clip_jax import data
    from clip_jax.data import image_ops, pipeline

    paths = sorted(glob.glob(os.path.join(args.shards, "*.tar")))
    if not paths:
        raise SystemExit(f"--shards {args.shards!r}: no .tar files there")
    encoded = []
    for path in paths:
        with tarfile.open(path) as tar:
            encoded += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    encoded = encoded[: args.examples]
    print(f"host: {cpu_model()}; pinned to CPU {args.cpu}; {len(encoded)} JPEGs from {len(paths)} shards")

    def pil():
        for item in encoded:
            Image.open(io.BytesIO(item)).convert("RGB")

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.deterministic = True

    def in_tf_data(fn, padded=None):
        ds = tf.data.Dataset.from_tensor_slices(encoded).enumerate().map(fn, num_parallel_calls=1)
        ds = ds.padded_batch(BATCH, padded_shapes=padded) if padded else ds.batch(BATCH)
        ds = ds.with_options(options)
        return lambda: [None for _ in ds.as_numpy_iterator()]

    def seed(i):
        return tf.stack([tf.constant(3, tf.int64), i])

    canvas = [*image_ops.canvas_shape(SIZE), 3]
    report("PIL decode, full size", pil, len(encoded))
    def decode(i, b):
        return tf.io.decode_jpeg(b, channels=3, dct_method=image_ops.JPEG_DCT)[: canvas[0], : canvas[1]]

    report("tf.io.decode_jpeg, full size (padded_batch)", in_tf_data(decode, canvas), len(encoded))
    report("train_window (device transform's host half, padded_batch)",
           in_tf_data(lambda i, b: image_ops.train_window(b, SIZE, seed(i))[0], canvas), len(encoded))
    report("train_pixels fast (uint8 crop)", in_tf_data(lambda i, b: image_ops.train_pixels(b, SIZE, seed(i))),
           len(encoded))
    report("train_pixels fast + normalize (float32 crop)",
           in_tf_data(lambda i, b: image_ops.train_image(b, SIZE, seed(i))), len(encoded))

    spec = f"wds:{os.path.join(args.shards, '*.tar')}"
    examples = args.batches * BATCH

    def iterator(**options):
        it = data.train_iterator(spec, batch_size=BATCH, image_size=SIZE, seed=0, num_threads=1, **options)
        next(it)
        return lambda: [next(it) for _ in range(args.batches)]

    report("train_iterator, train_transform=device", iterator(train_transform="device"), examples)
    report("train_iterator, train_transform=fast (uint8)", iterator(train_transform="fast"), examples)
    report("train_iterator, fast, uint8_images=False (float32)", iterator(uint8_images=False), examples)

    def no_image(self, data_bytes, crop_seed):
        return {"images": tf.zeros([1, 1, 3], tf.uint8)}

    pipeline.TrainIterator._image_fields = no_image  # the rest of the pipeline alone
    pipeline.TrainIterator._blank_image_fields = lambda self: no_image(self, None, None)
    report("train_iterator with the image work taken out", iterator(), examples)


if __name__ == "__main__":
    main()
