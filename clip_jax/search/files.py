"""The photos side of an index: which files are images, their fingerprints, and reading them.

A file is identified by its path relative to the indexed folder, its size and its
modification time (nanoseconds): an update re-embeds a file when any of the three changes.
Images are read with PIL, rotated upright by their EXIF orientation tag, then given
CLIP's evaluation transform (`clip_jax.preprocess`).  A file that cannot be read becomes
an `UnreadableImage` carrying the reason, which the index records and reports.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from clip_jax.preprocess import preprocess

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
# CLIP's transform resizes the shorter side to the model's input size; an extreme aspect
# ratio (a 1 x 100,000 strip) would make that intermediate image huge.
MAX_RESIZED_PIXELS = 64_000_000


class UnreadableImage(Exception):
    """A file that is not a readable image; str(error) is the reason."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str        # relative to the indexed folder, '/'-separated
    size: int        # bytes
    mtime_ns: int

    @property
    def fingerprint(self) -> tuple[int, int]:
        return self.size, self.mtime_ns


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_within(path: str, folder: str) -> bool:
    """Whether `path`, with every symlink resolved, lies inside `folder` (also resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def walk(root: str, exclude: str | None = None) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """(image files under root, [(relative path, reason)] of image-named files left out).

    Hidden files and folders (names starting with '.') and `exclude` (the index folder,
    when it lies inside root) are not visited; symlinked folders are not followed, and a
    symlinked file counts only when it points inside root."""
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root!r} is not a folder of images")
    exclude = os.path.realpath(exclude) if exclude else None
    found, left_out = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(folder, d) != exclude)
        for name in sorted(files):
            if name.startswith(".") or not is_image_name(name):
                continue
            full = os.path.join(folder, name)
            relative = os.path.relpath(full, root).replace(os.sep, "/")
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError:
                left_out.append((relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                 "file name is not valid UTF-8"))
                continue
            if os.path.islink(full) and not is_within(full, root):
                left_out.append((relative, "symlink to a file outside the indexed folder"))
                continue
            try:
                stat = os.stat(full)
            except OSError as error:  # a dangling symlink, or removed while walking
                left_out.append((relative, f"cannot stat: {error.strerror or error}"))
                continue
            found.append(FileEntry(relative, stat.st_size, stat.st_mtime_ns))
    return found, left_out


def open_upright(path: str) -> Image.Image:
    """The image at `path`, fully decoded and rotated by its EXIF orientation.

    Raises UnreadableImage for empty, truncated or non-image files."""
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF and palette transparency
            with Image.open(path) as image:
                image.load()  # decode now: truncated data fails here, not later
                upright = ImageOps.exif_transpose(image)
                upright.load()
                return upright
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"too many pixels: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None


def model_input(image: Image.Image, image_size: int, family: str = "clip") -> np.ndarray:
    """The model's evaluation transform (`family`: its family's name) of an upright image: float32
    [image_size, image_size, 3]."""
    width, height = image.size
    if min(width, height) == 0:
        raise UnreadableImage(f"image has no pixels ({width}x{height})")
    if image_size * image_size * max(width, height) / min(width, height) > MAX_RESIZED_PIXELS:
        raise UnreadableImage(f"aspect ratio {width}x{height} is too extreme to resize to {image_size} px")
    try:
        return preprocess(image, image_size, family=family)
    except (OSError, ValueError) as error:  # e.g. a mode PIL cannot convert to RGB
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None


def read_for_model(path: str, image_size: int, family: str = "clip") -> tuple[np.ndarray, tuple[int, int]]:
    """(model input, upright (width, height)) of the image file at `path`."""
    image = open_upright(path)
    return model_input(image, image_size, family), image.size


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
