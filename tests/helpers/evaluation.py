"""Shared builders for the evaluation tests (no tests here): small image datasets written
to disk, a tiny model, and Gaussian-cluster features with known signal."""
import io
import json
import os

import numpy as np
from PIL import Image


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def class_image(label: int, seed: int, size: int = 32) -> np.ndarray:
    """A noisy image whose colour and stripe period depend on the class."""
    rs = np.random.RandomState(seed)
    base = np.array([(label * 67) % 256, (label * 131 + 40) % 256, (label * 29 + 90) % 256], np.float32)
    stripes = (np.arange(size) // (2 + label) % 2)[None, :, None] * 60.0
    pixels = base + stripes + rs.normal(0, 25, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def folder_dataset(root: str, classes: int = 5, per_class: int = 20, seed: int = 0) -> str:
    names = [f"class_{c}" for c in range(classes)]
    for label, name in enumerate(names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = class_image(label, seed * 100_000 + label * 1000 + i)
            with open(os.path.join(root, name, f"{i:03d}.png"), "wb") as f:
                f.write(_png(pixels))
    return f"folder:{root}"


def retrieval_dataset(directory: str, images: int = 40, captions: int = 2) -> tuple[str, list]:
    """A WebDataset shard: `images` images with `captions` captions each; returns the spec
    and the list of (pixels, captions) in order."""
    from clip_jax.data.wds_writer import ShardWriter

    rows = []
    with ShardWriter(os.path.join(directory, "ret-"), samples_per_shard=10_000) as writer:
        for i in range(images):
            pixels = class_image(i % 7, 500 + i)
            texts = [f"picture number {i} variant {j} of kind {i % 7}" for j in range(captions)]
            writer.write(f"s{i:04d}", {"png": _png(pixels), "json": json.dumps({"captions": texts})})
            rows.append((pixels, texts))
        spec = writer.spec()
    return spec, rows


def clusters(n: int, classes: int, dim: int, separation: float, seed: int, means_seed: int = 123):
    """Gaussian class clusters: features [n, dim] float32 and labels [n]."""
    means = np.random.RandomState(means_seed).randn(classes, dim) * separation
    rs = np.random.RandomState(seed)
    labels = rs.randint(0, classes, n)
    return (means[labels] + rs.randn(n, dim)).astype(np.float32), labels.astype(np.int64)


def labelled_wds(directory: str, labels, with_cls: bool = True, per_shard: int = 10_000) -> str:
    """WebDataset shards of class images with .cls labels (or none); returns the spec."""
    from clip_jax.data.wds_writer import ShardWriter

    with ShardWriter(os.path.join(directory, "cls-"), samples_per_shard=per_shard) as writer:
        for i, label in enumerate(labels):
            fields = {"png": _png(class_image(int(label), 900 + i))}
            if with_cls:
                fields["cls"] = str(int(label))
            writer.write(f"s{i:04d}", fields)
        return writer.spec()


def labelled_csv(directory: str, labels) -> str:
    """A CSV of image paths and integer labels (no captions); returns the spec."""
    os.makedirs(os.path.join(directory, "img"), exist_ok=True)
    lines = ["path,y"]
    for i, label in enumerate(labels):
        with open(os.path.join(directory, "img", f"{i}.png"), "wb") as f:
            f.write(_png(class_image(int(label), 700 + i)))
        lines.append(f"img/{i}.png,{int(label)}")
    with open(os.path.join(directory, "data.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return f"csv:{os.path.join(directory, 'data.csv')}?image=path&label=y"
