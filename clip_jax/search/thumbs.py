"""Thumbnails of indexed images, made once and kept in INDEX/thumbs/ID.jpg.

Image ids are never reused (a changed file gets a new id), so a cached thumbnail is always
the current picture of its id; updates delete the thumbnails of removed ids.
"""
from __future__ import annotations

import os

from PIL import Image

from clip_jax.search.files import UnreadableImage, open_upright
from clip_jax.search.store import atomic_write

THUMB_SIZE = 256


def thumbnail(source: str, size: int = THUMB_SIZE) -> Image.Image:
    """An RGB image at most size x size of the (upright) image file `source`."""
    image = open_upright(source)
    try:
        image.thumbnail((size, size), Image.BICUBIC)
        if image.mode != "RGB":  # transparency shown on white
            rgba = image.convert("RGBA")
            image = Image.new("RGB", image.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
    except (OSError, ValueError) as error:
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None
    return image


def cached_thumbnail(index_path: str, image_id: int, source: str, size: int = THUMB_SIZE) -> str:
    """The path of the JPEG thumbnail of image `image_id` (whose file is `source`), made if missing.

    Raises UnreadableImage when the file is no longer a readable image."""
    folder = os.path.join(index_path, "thumbs")
    path = os.path.join(folder, f"{int(image_id)}.jpg")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        image = thumbnail(source, size)
        atomic_write(path, lambda f: image.save(f, format="JPEG", quality=85))
    return path


__all__ = ["THUMB_SIZE", "UnreadableImage", "cached_thumbnail", "thumbnail"]
