"""Tiny datasets written on the fly for the data tests: images, tar shards, TFRecords."""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [h, w, 3]: smooth gradients, a few hard-edged shapes and mild noise."""
    rs = np.random.RandomState(seed)
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack(
        [255 * (0.5 + 0.5 * np.sin(6 * xs + c + rs.rand() * 3) * np.cos(4 * ys - c)) for c in range(3)], -1
    )
    for _ in range(4):
        y0, x0 = rs.randint(0, height), rs.randint(0, width)
        image[y0 : y0 + height // 4, x0 : x0 + width // 5] = rs.randint(0, 256, 3)
    image += rs.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def jpeg(height=40, width=48, seed=0) -> bytes:
    return encode(photo_like(height, width, seed), "JPEG", quality=90)


def write_tar(path: str, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    """samples: (key, {ext: bytes}) in order, written as key.ext members."""
    with tarfile.open(path, "w") as tar:
        for key, fields in samples:
            for ext, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def captioned_shards(directory: str, num_shards: int, per_shard: int, prefix: str = "shard", size=(24, 32)) -> str:
    """num_shards tar shards of JPEG + "example N" captions; returns the wds: spec."""
    os.makedirs(directory, exist_ok=True)
    index = 0
    for shard in range(num_shards):
        samples = []
        for _ in range(per_shard):
            samples.append((f"{index:06d}", {"jpg": jpeg(*size, seed=index), "txt": f"example {index}".encode()}))
            index += 1
        write_tar(os.path.join(directory, f"{prefix}-{shard:03d}.tar"), samples)
    return f"wds:{directory}/{prefix}-{{000..{num_shards - 1:03d}}}.tar"


def truncate(path: str, keep_fraction: float) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])
