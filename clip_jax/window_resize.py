"""The training crop's resize, run on the accelerator inside the jitted step.

With `train_transform="device"` the host only decodes: every example arrives as a uint8
square canvas holding its crop window's pixels in the top-left corner
(clip_jax.data.image_ops.train_window, padded as the pipeline batches), the crop's exact
box in those pixels (fractional: JPEGs are decoded at a reduced DCT scale) and the valid
height and width.

Here each window is resized to size x size with PIL's antialiased bicubic, as
Image.resize((size, size), BICUBIC, box=...) computes it on a float image: per example
and per axis a [size, canvas side] weight matrix (Pillow's precompute_coeffs: output i
centred at start + (i + 0.5) * scale, the cubic kernel with a = -0.5 stretched by
max(scale, 1), normalised to sum 1, inputs clipped to the valid pixels), applied as two
batched matmuls.  The weights are zero outside the valid part, so the canvas padding
never leaks in.  Same arithmetic as the host's "fast" transform (image_ops.resize_bicubic),
which rounds to uint8 where this keeps floats.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _bicubic_kernel(x):
    """Keys' cubic convolution, a = -0.5 (PIL's bicubic), for x = |t| < 2."""
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return jnp.where(x < 1.0, near, far)


def resize_weights(start, extent, valid, n_in: int, size: int):
    """float32 [B, size, n_in]: row i of example b resamples the inputs [start_b,
    start_b + extent_b) (float pixels, of which the first valid_b exist) to output i."""
    start, extent, valid = (jnp.asarray(v, jnp.float32)[:, None, None] for v in (start, extent, valid))
    scale = extent / size
    stretch = jnp.maximum(scale, 1.0)
    centers = start + (jnp.arange(size, dtype=jnp.float32)[None, :, None] + 0.5) * scale
    low = jnp.clip(jnp.floor(centers + 0.5 - 2.0 * stretch), 0.0, valid)
    high = jnp.clip(jnp.floor(centers + 0.5 + 2.0 * stretch), 0.0, valid)
    x = jnp.arange(n_in, dtype=jnp.float32)[None, None, :]
    distance = jnp.abs(x - centers + 0.5) / stretch
    weights = jnp.where((x >= low) & (x < high) & (distance < 2.0), _bicubic_kernel(distance), 0.0)
    total = jnp.sum(weights, -1, keepdims=True)
    return weights / jnp.where(total == 0.0, 1.0, total)


def resize_windows(canvas, boxes, valid, size: int):
    """uint8 [B, H, W, C] canvases, float32 [B, 4] boxes (top, left, height, width),
    int32 [B, 2] valid (height, width) -> float32 [B, size, size, C], unclipped: the width
    pass, then the height pass on its narrower result."""
    _, height, width, _ = canvas.shape
    rows = resize_weights(boxes[:, 0], boxes[:, 2], valid[:, 0], height, size)
    columns = resize_weights(boxes[:, 1], boxes[:, 3], valid[:, 1], width, size)
    pixels = canvas.astype(jnp.float32)
    # HIGH: TF32 on GPUs, three bfloat16 passes on TPUs, float32 on CPUs.  Pixel values are
    # exact in TF32 and the weights keep 11 bits, so errors stay a fraction of a level;
    # DEFAULT (one bfloat16 pass) would keep 8 bits of the weights, and HIGHEST would run
    # GPUs' much slower float32 path.
    precision = jax.lax.Precision.HIGH
    narrow = jnp.einsum("bjw,bhwc->bhjc", columns, pixels, precision=precision)
    return jnp.einsum("bih,bhjc->bijc", rows, narrow, precision=precision)


def crops(canvas, boxes, valid, size: int):
    """The pipeline's window fields (WINDOW_KEYS) -> float32 [B, size, size, 3] pixel
    values in [0, 255]: the training crops."""
    return jnp.clip(resize_windows(canvas, boxes, valid, size), 0.0, 255.0)


def added_flops(size: int, canvas: tuple[int, int], channels: int = 3) -> int:
    """Multiply-adds x 2 of `resize_windows` per example on a (height, width) canvas (the
    weights' cost is negligible)."""
    height, width = canvas
    return 2 * channels * (height * width * size + size * height * size)
