"""CLIP's mean/std normalisation of uint8 image batches, for use inside a jitted step.

With `train_iterator(..., uint8_images=True)` batches cross to the device as uint8 NHWC,
a quarter of the bytes of float32; the step turns them into model input with
`normalize_images`, which uses the pipeline's own constants (image_ops.PIXEL_SCALE and
PIXEL_OFFSET, from clip_jax.preprocess's MEAN and STD) and arithmetic, so it equals the
pipeline's float32 output to float rounding.
"""
from __future__ import annotations

import jax.numpy as jnp

from clip_jax.data.image_ops import PIXEL_OFFSET, PIXEL_SCALE


def normalize_images(images, dtype=jnp.float32):
    """uint8 [..., 3] pixels -> (pixels / 255 - MEAN) / STD, computed in float32, cast to `dtype`."""
    if images.dtype != jnp.uint8:
        raise TypeError(
            f"normalize_images expects uint8 pixels (train_iterator(uint8_images=True)), got {images.dtype}"
        )
    pixels = jnp.asarray(images).astype(jnp.float32)
    return (pixels * jnp.asarray(PIXEL_SCALE) + jnp.asarray(PIXEL_OFFSET)).astype(dtype)
