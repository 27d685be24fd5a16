"""The evaluation transforms on PIL images, chosen by the model's family (its
`resize`, `image_mean` and `image_std`, clip_jax/models/families/):

"crop" (CLIP, matching OpenAI's and open_clip's): resize the shorter side to n_px with
PIL's (antialiased) bicubic, the longer side to int(n_px * long / short); centre crop with
torchvision's rounded offsets; convert to RGB (after resizing, as OpenAI does, so palette
images resize as PIL resizes them); scale to [0, 1]; normalise with the family's mean and std.
"squash" (SigLIP, matching transformers' SiglipImageProcessor): convert to RGB; resize the
whole image to n_px x n_px with PIL's bicubic (no crop: the aspect ratio is not kept);
scale to [0, 1] and normalise (mean and std 0.5: [-1, 1]).
A pretrained row's `preprocessing` (clip_jax.pretrained.Preprocessing) names its own
resize, statistics and when it converts to RGB (open_clip's rows: after resizing).
Output is NHWC float32.

Also the one definition of these normalisations for uint8 pixels (`pixel_affine`): the
training pipeline applies it in TensorFlow, and the train step applies it with
`normalize_images` to uint8 batches (`normalize_values` to crops resized on the device)
inside the jitted step.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from PIL import Image

from clip_jax.models.families import FAMILIES, get_family

MEAN = np.array(get_family("clip").image_mean, np.float32)
STD = np.array(get_family("clip").image_std, np.float32)


def normalization(family) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 [3] of a family's images (a family name, e.g. a model's
    config.family, or a pretrained row's `preprocessing`)."""
    return _transform(family)[1:3]


def _transform(family) -> tuple[str, np.ndarray, np.ndarray, bool]:
    """(resize, mean, std, whether to convert to RGB before resizing) of a family name or
    of an object with those attributes (clip_jax.pretrained.Preprocessing: a checkpoint
    trained with other statistics, or by open_clip, which converts after resizing)."""
    if all(hasattr(family, a) for a in ("resize", "mean", "std")):
        return (family.resize, np.array(family.mean, np.float32), np.array(family.std, np.float32),
                getattr(family, "rgb_first", False))
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} for preprocessing; valid: {', '.join(FAMILIES)} (a "
                         "model's config.family) or a pretrained row's preprocessing")
    found = FAMILIES[family]
    # SigLIP's squash is transformers' processor's, which converts first; CLIP's crop is OpenAI's, which converts last.
    return (found.resize, np.array(found.image_mean, np.float32), np.array(found.image_std, np.float32),
            found.resize == "squash")


def pixel_affine(family: str = "clip") -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) [3] with (x / 255 - mean) / std == x * scale + offset: one
    multiply-add per value, computed in float64 and stored as float32."""
    mean, std = (v.astype(np.float64) for v in normalization(family))
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize_images(images, dtype="float32", family: str = "clip"):
    """uint8 [..., 3] pixels -> (pixels / 255 - mean) / std of `family`, computed in
    float32 with JAX (inside a jitted step), cast to `dtype`."""
    import jax.numpy as jnp

    if images.dtype != jnp.uint8:
        raise TypeError(f"normalize_images expects uint8 pixels (train_iterator(uint8_images=True)); "
                        f"got {images.dtype}")
    return normalize_values(jnp.asarray(images).astype(jnp.float32), dtype, family)


def normalize_values(pixels, dtype="float32", family: str = "clip"):
    """float32 pixel values in [0, 255] [..., 3] (e.g. clip_jax.window_resize's crops) ->
    normalised for `family` with JAX, cast to `dtype`."""
    import jax.numpy as jnp

    scale, offset = pixel_affine(family)
    return (pixels * jnp.asarray(scale) + jnp.asarray(offset)).astype(dtype)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width < size or height < size:
        raise ValueError(f"image of size {image.size} is smaller than the crop {size}")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, image_size: int = 224, family="clip") -> np.ndarray:
    """One PIL image -> float32 [image_size, image_size, 3], as `family`'s models take it
    (a family name, or a pretrained row's `preprocessing`)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    resize, mean, std, rgb_first = _transform(family)
    if rgb_first:
        image = image.convert("RGB")
    if resize == "squash":
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
    else:
        image = center_crop(resize_shorter_side(image, image_size), image_size)
    image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return (pixels - mean) / std


def preprocess_batch(images: Iterable[Image.Image], image_size: int = 224, family="clip") -> np.ndarray:
    """PIL images -> float32 NHWC [N, image_size, image_size, 3]."""
    return np.stack([preprocess(image, image_size, family) for image in images])


def load_image(path: str, image_size: int = 224, family="clip") -> np.ndarray:
    with Image.open(path) as image:
        return preprocess(image, image_size, family)
