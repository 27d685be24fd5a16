"""clip_jax.search: index build rate, and query latency and recall of ANN vs exact search.

    python bench/search.py build  [--images 256] [--model ViT-B/32]      # images/s indexing a generated folder
    python bench/search.py vectors [--sizes 10000,100000,1000000]        # latency (p50/p95) and recall@10

build: writes a folder of photo-like JPEGs (640 x 480, smooth gradients, shapes and
noise), then indexes it with the named architecture at random weights (speed does not
depend on the weights) twice, taking turns: through `Index.build` (threaded decoding a
window ahead of fixed-size jitted batches) and through a plain loop (decode a batch, then
encode it) as the reference.  Prints images/s of both, their ratio, and the decode-only
rate of one thread.

vectors: N synthetic 512-d unit vectors with the structure of CLIP embeddings rather than
uniform Gaussian noise (on which every ANN method degrades to a scan): a shared mean
direction (CLIP embeddings lie in a narrow cone), N/100 cluster centres spread in a
64-dimensional subspace around it (pairwise cosine about 0.5), and each point its centre
plus a spread in a cluster-specific 16-dimensional subspace (cosine to the centre about
0.9) and small isotropic noise, normalised.  Two kinds of queries: image-like (fresh
draws from the same mixture: query by example) and text-like (those moved by a fixed
"modality gap" vector and isotropic noise to a cosine of about 0.35 with their source,
as a caption's embedding sits from its image's in CLIP).  Vectors are float16 as an index stores them.
For each N: exact search (clip_jax.search.exact, JAX) and the faiss IVF index
(clip_jax.search.ann, default cells and probes) answer the same single queries, taking
turns; prints build time, p50/p95 latency of each, and recall@10 of the ANN index against
exact search, then recall and latency over a range of probe counts at the largest N.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402,F401  (allocator and import order first)

DIM = 512


# -- build rate --------------------------------------------------------------------------------------


def write_photos(folder: str, n: int, size=(640, 480)) -> None:
    from PIL import Image

    from tests.helpers.data import photo_like

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        Image.fromarray(photo_like(size[1], size[0], seed=i)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def plain_rate(encoder, folder: str) -> float:
    """The reference: decode a batch in this thread, then encode it, batch after batch."""
    from clip_jax.search.files import read_for_model

    names = sorted(os.listdir(folder))
    start = time.perf_counter()
    for i in range(0, len(names), encoder.batch_size):
        batch = np.stack([read_for_model(os.path.join(folder, n), encoder.image_size)[0]
                          for n in names[i : i + encoder.batch_size]])
        encoder.encode_images(batch)
    return len(names) / (time.perf_counter() - start)


def bench_build(args) -> None:
    import jax

    import clip_jax
    from clip_jax.search import Index
    from clip_jax.search.encoder import Encoder
    from clip_jax.search.files import read_for_model

    work = tempfile.mkdtemp(prefix="clip_jax_bench_search_")
    try:
        folder = os.path.join(work, "photos")
        write_photos(folder, args.images)
        model = clip_jax.create_model(args.model)
        variables = clip_jax.init_variables(model)
        encoder = Encoder(model, variables, batch_size=args.batch)
        encoder.encode_images(np.zeros((1, encoder.image_size, encoder.image_size, 3), np.float32))  # compile
        print(f"{args.images} JPEGs 640x480, {args.model} (random weights), batch {encoder.batch_size}, "
              f"{jax.local_device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores")
        names = sorted(os.listdir(folder))[:64]
        start = time.perf_counter()
        for name in names:
            read_for_model(os.path.join(folder, name), encoder.image_size)
        print(f"decode + preprocess alone, one thread: {len(names) / (time.perf_counter() - start):.1f} images/s")
        rates = {"index": [], "plain": []}
        for round_ in range(args.rounds):
            index_dir = os.path.join(work, f"index{round_}")
            start = time.perf_counter()
            Index.build(folder, index_dir, model=model, variables=variables, batch_size=args.batch,
                        progress=False).close()
            rates["index"].append(args.images / (time.perf_counter() - start))
            rates["plain"].append(plain_rate(encoder, folder))
            print(f"round {round_ + 1}: Index.build {rates['index'][-1]:.2f} images/s, "
                  f"plain loop {rates['plain'][-1]:.2f} images/s", flush=True)
        best = {k: statistics.median(v) for k, v in rates.items()}
        print(f"median: Index.build {best['index']:.2f} images/s (whole build: walk, decode, embed, "
              f"durable chunks), plain loop {best['plain']:.2f} images/s, ratio {best['index'] / best['plain']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- vectors: latency and recall ------------------------------------------------------------------------


def clip_like_mixture(n: int, dim: int = DIM, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """(centres [C, dim], local bases [C, 16, dim]) of the mixture for a collection of n vectors
    (C = n / 100 clusters)."""
    rng = np.random.default_rng(seed)
    clusters = max(10, n // 100)
    mean = rng.standard_normal(dim)
    mean /= np.linalg.norm(mean)
    basis = np.linalg.qr(rng.standard_normal((dim, 64)))[0]          # [dim, 64] orthonormal
    offsets = rng.standard_normal((clusters, 64)) @ basis.T / np.sqrt(64)  # norm about 1
    centres = mean + offsets                                          # pairwise cosine about 0.5
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, 16, dim)).astype(np.float32) / np.sqrt(dim)
    return centres.astype(np.float32), bases


def clip_like_vectors(n: int, mixture, seed: int, spread: float = 0.5, noise: float = 0.1) -> np.ndarray:
    """n normalised float16 draws: a random centre, plus a spread of norm about `spread` in the
    centre's own 16-d subspace (cosine to the centre about 0.9), plus isotropic noise of norm `noise`."""
    centres, bases = mixture
    rng = np.random.default_rng(seed)
    out = np.empty((n, centres.shape[1]), np.float16)
    for start in range(0, n, 8192):
        m = min(8192, n - start)
        which = rng.integers(0, len(centres), m)
        w = rng.standard_normal((m, 16)).astype(np.float32) * spread / 4
        x = centres[which] + np.einsum("mk,mkd->md", w, bases[which])
        x += rng.standard_normal(x.shape).astype(np.float32) * noise / np.sqrt(x.shape[1])
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def text_like_queries(n: int, mixture, seed: int, gap: float = 1.0, noise: float = 2.2) -> np.ndarray:
    """Queries as CLIP's text embeddings sit relative to its image embeddings: each is an
    image-like draw moved by one fixed 'modality gap' vector and by isotropic noise, so its
    cosine with the image it was made from is about 0.35 (a matching caption's, in CLIP)."""
    centres, _ = mixture
    rng = np.random.default_rng(seed)
    gap_direction = rng.standard_normal(centres.shape[1])
    gap_direction /= np.linalg.norm(gap_direction)
    x = clip_like_vectors(n, mixture, seed).astype(np.float32)
    noise_vectors = rng.standard_normal(x.shape) * noise / np.sqrt(x.shape[1])
    q = x + gap * gap_direction + noise_vectors
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def _measure(exact, ann, queries, nprobe=None):
    """Single queries, exact and ANN taking turns: (exact wall times, ANN wall times, ANN CPU
    times of the calling thread, recall@10).  faiss answers one query in the calling thread,
    so its thread CPU time is its latency on an idle core; wall times include the load."""
    exact_times, ann_times, ann_cpu, recalls = [], [], [], []
    for q in queries:
        start = time.perf_counter()
        _, rows = exact.search(q[None], 10)
        exact_times.append(time.perf_counter() - start)
        start, cpu = time.perf_counter(), time.thread_time()
        _, ids = ann.search(q[None], 10, nprobe=nprobe)
        ann_cpu.append(time.thread_time() - cpu)
        ann_times.append(time.perf_counter() - start)
        recalls.append(len(set(rows[0]) & set(ids[0])) / 10)
    return exact_times, ann_times, ann_cpu, float(np.mean(recalls))


def bench_vectors(args) -> None:
    import faiss

    from clip_jax.search.ann import AnnIndex
    from clip_jax.search.exact import ExactSearch

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{DIM}-d float16 CLIP-like vectors, {args.queries} single queries of each kind, "
          f"faiss threads {faiss.omp_get_max_threads()}, {os.cpu_count()} cores")
    print(f"{'N':>9} {'queries':>7} {'ANN build':>9} {'cells':>5} {'probes':>6} {'exact p50':>9} {'exact p95':>9} "
          f"{'ANN p50':>8} {'ANN p95':>8} {'ANN CPU p50':>11} {'recall@10':>9}")
    for n in sizes:
        mixture = clip_like_mixture(n)
        vectors = clip_like_vectors(n, mixture, seed=0)
        kinds = {"image": clip_like_vectors(args.queries, mixture, seed=1).astype(np.float32),
                 "text": text_like_queries(args.queries, mixture, seed=2)}
        exact = ExactSearch(vectors)
        exact.search(kinds["image"][:1], 10)  # compile
        start = time.perf_counter()
        ann = AnnIndex.build(vectors, np.arange(n, dtype=np.int64))
        build_seconds = time.perf_counter() - start
        for kind, queries in kinds.items():
            exact_times, ann_times, ann_cpu, recall = _measure(exact, ann, queries)
            print(f"{n:>9,} {kind:>7} {build_seconds:>8.1f}s {ann.nlist:>5} {ann.nprobe:>6} "
                  f"{percentile(exact_times, 50):>7.2f}ms {percentile(exact_times, 95):>7.2f}ms "
                  f"{percentile(ann_times, 50):>6.2f}ms {percentile(ann_times, 95):>6.2f}ms "
                  f"{percentile(ann_cpu, 50):>9.2f}ms {recall:>9.3f}", flush=True)
        if n == sizes[-1]:
            print(f"probe sweep at N={n:,}, {ann.nlist} cells (default {ann.nprobe} probes):")
            for nprobe in sorted({16, 64, 128, 256, 320, ann.nprobe}):
                line = []
                for kind, queries in kinds.items():
                    _, times, cpu, recall = _measure(exact, ann, queries[:100], nprobe=nprobe)
                    line.append(f"{kind} recall@10 {recall:.3f} p50 {percentile(times, 50):.2f} ms "
                                f"(CPU {percentile(cpu, 50):.2f} ms)")
                print(f"  nprobe {nprobe:>4}: " + "; ".join(line), flush=True)
        del exact, ann, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build")
    build.add_argument("--images", type=int, default=256)
    build.add_argument("--model", default="ViT-B/32")
    build.add_argument("--batch", type=int, default=32)
    build.add_argument("--rounds", type=int, default=3)
    vectors = commands.add_parser("vectors")
    vectors.add_argument("--sizes", default="10000,100000,1000000")
    vectors.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    bench_build(args) if args.command == "build" else bench_vectors(args)


if __name__ == "__main__":
    main()
