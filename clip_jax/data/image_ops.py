"""Image decoding and CLIP's crops in the TF graph (so tf.data can run them in parallel).

- Decoding: JPEG, PNG, WebP, GIF (first frame), BMP through tf.io; grey, CMYK and alpha
  images become RGB.  Undecodable bytes raise inside the graph; the pipeline catches and
  counts them.
- Training: a random resized crop (area fraction `scale`, aspect ratio `ratio`, as
  torchvision's RandomResizedCrop) drawn with a stateless seed, so an example's crop is a
  function of (seed, position in the stream) and survives a resume.  Two transforms draw
  the same crop window:
    "fast" (training default): a JPEG whose window is at least 2x (4x, 8x) the output in
      both sides is decoded at 1/2 (1/4, 1/8) scale by libjpeg's scaled IDCT, which does
      a fraction of the inverse transforms and colour conversion and acts as a first
      low-pass (entropy decoding still reads the whole file); only the window's rows and
      columns are reconstructed.  The window (fractional at reduced scale) is then
      resized in one floating-point pass of PIL's antialiased bicubic (`resize_bicubic`)
      and rounded to uint8.
    "exact": the window decoded at full scale and resized as `resize_like_pil` (the
      evaluation resize), the transform clip_jax used before "fast".
    "device" (`train_window`): the host decodes the window as "fast" does and stops
      there; the window's pixels travel as uint8 in a fixed square canvas (about 8/3 of the
      output size a side) with their box, and clip_jax.window_resize resizes them inside
      the train step.
- Evaluation: the shorter side to `size` (the longer to int(size * long / short), as PIL),
  then a centre crop with round-half-even offsets (torchvision's round()), like
  clip_jax.preprocess.preprocess.
- `resize_like_pil` (evaluation, "exact") is bicubic with antialias in PIL's two passes
  (horizontal, round to uint8, vertical, round to uint8), so results match PIL to 1 level in
  most cases; Pillow 13 sometimes runs the vertical pass first, and then edges and noise can
  differ by more (tests/data/test_pipeline.py measures it).  JPEGs use the accurate integer
  IDCT, as PIL.  `normalize` then applies the family's mean and std.
- `family` names the model family, whose `resize` and normalisation these follow: a
  "squash" family (SigLIP) is resized whole to size x size in evaluation (no crop, as
  transformers' SiglipImageProcessor), and normalised with its own mean and std
  (clip_jax.preprocess.normalization).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from clip_jax.models.families import get_family
from clip_jax.preprocess import pixel_affine

DEFAULT_RATIO = (3 / 4, 4 / 3)
JPEG_DCT = "INTEGER_ACCURATE"
DCT_SCALES = (1, 2, 4, 8)  # the reduced scales libjpeg decodes at (1/r)
RESIZE_TILE = 8  # output rows per banded-matmul tile in resize_bicubic
PIXEL_TRANSFORMS = ("fast", "exact")  # the transforms that finish the crop on the host
TRAIN_TRANSFORMS = ("fast", "exact", "device")  # "device": train_window, resized by clip_jax.window_resize


def is_jpeg(data: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
    """Encoded bytes -> uint8 [h, w, 3].

    JPEGs use the accurate integer IDCT, as PIL does; TF's default (fast IDCT) differs from
    PIL by ~1 level on average and up to ~6."""
    image = tf.cond(
        is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method=JPEG_DCT),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def _to_pixels(image: tf.Tensor) -> tf.Tensor:
    """Float resize output -> the uint8 values PIL would have stored, as float32."""
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def normalize(pixels: tf.Tensor, family: str = "clip") -> tf.Tensor:
    """Pixel values in [0, 255] (uint8 or float) [..., 3] -> float32 normalised for `family`
    (the family's mean and std: CLIP's, or SigLIP's [-1, 1]).

    With a static shape the per-channel constants are laid out in that shape: TF's CPU
    kernels broadcast a [3] vector over an image several times slower than they apply
    same-shape operands."""
    pixels = tf.cast(pixels, tf.float32)
    scale, offset = pixel_affine(family)
    if pixels.shape.is_fully_defined():
        scale, offset = (np.ascontiguousarray(np.broadcast_to(v, pixels.shape)) for v in (scale, offset))
    return pixels * tf.constant(scale) + tf.constant(offset)


# -- training crops ---------------------------------------------------------------------


def crop_window(shape: tf.Tensor, seed: tf.Tensor, scale, ratio) -> tuple[tf.Tensor, tf.Tensor]:
    """(begin, extent), int32 [3] each: a random resized crop's window in an image of `shape`.

    When 10 draws find no window of the given area and aspect ratio (an image wider than
    the widest ratio, say, with a large minimum area), TF's sampler returns the whole
    image; like torchvision's RandomResizedCrop (and so open_clip) we then take the largest
    centred window whose aspect ratio is inside `ratio` instead, so crops are never
    stretched beyond it."""
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    whole = tf.logical_and(tf.equal(extent[0], shape[0]), tf.equal(extent[1], shape[1]))
    # torchvision's fallback: int(round(...)) of the clamped side, centred with floor division.
    clamped_height = tf.where(width / height < ratio[0], tf.round(width / ratio[0]), height)
    clamped_width = tf.where(width / height > ratio[1], tf.round(height * ratio[1]), width)
    clamped = tf.cast(tf.stack([clamped_height, clamped_width]), tf.int32)
    extent = tf.where(whole, tf.concat([clamped, extent[2:]], 0), extent)
    begin = tf.where(whole, tf.concat([(shape[:2] - clamped) // 2, begin[2:]], 0), begin)
    return begin, extent


def train_pixels(data: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.9, 1.0), ratio=DEFAULT_RATIO,
                 transform: str = "fast") -> tf.Tensor:
    """Random resized crop of encoded bytes -> uint8 [size, size, 3] (see the module docstring)."""
    if transform not in PIXEL_TRANSFORMS:
        raise ValueError(f"train_pixels' transform must be one of {PIXEL_TRANSFORMS}, got {transform!r} "
                         "(\"device\" crops are made by train_window)")

    def from_jpeg():
        shape = tf.io.extract_jpeg_shape(data)
        begin, extent = crop_window(shape, seed, scale, ratio)
        if transform == "exact":
            window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
            crop = tf.io.decode_and_crop_jpeg(data, window, channels=3, dct_method=JPEG_DCT)
            return _to_pixels(resize_like_pil(crop, tf.constant(size), tf.constant(size)))
        crop, box = decode_jpeg_window(data, shape, begin, extent, size)
        return _to_pixels(resize_bicubic(crop, box, size))

    def from_other():
        image = decode_rgb(data)
        begin, extent = crop_window(tf.shape(image), seed, scale, ratio)
        if transform == "exact":
            return _to_pixels(resize_like_pil(tf.slice(image, begin, extent), tf.constant(size), tf.constant(size)))
        box = tf.cast(tf.stack([begin[0], begin[1], extent[0], extent[1]]), tf.float32)
        return _to_pixels(resize_bicubic(image, box, size))

    pixels = tf.cond(is_jpeg(data), from_jpeg, from_other)
    return tf.ensure_shape(tf.cast(pixels, tf.uint8), [size, size, 3])


def train_image(data: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.9, 1.0), ratio=DEFAULT_RATIO,
                transform: str = "fast", family: str = "clip") -> tf.Tensor:
    """Random resized crop of encoded bytes -> float32 [size, size, 3], normalised for `family`."""
    return normalize(train_pixels(data, size, seed, scale, ratio, transform), family)


def canvas_shape(size: int) -> tuple[int, int]:
    """(height, width) of the square canvas that carries a crop window for `size` output
    pixels.  A window's aspect ratio is within DEFAULT_RATIO (crop_window) and its shorter
    side, at the DCT scale dct_scale picks, under 2 * size (unless the image is over 16x the
    output), so both sides stay under 8/3 * size; +4 covers the widening to whole reduced
    pixels and rounding.  Square, so that tall windows need no transposing."""
    side = -(-8 * size // 3) + 4
    return side, side


def train_window(data: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.9, 1.0), ratio=DEFAULT_RATIO):
    """The "device" transform's host half: encoded bytes -> (window uint8 [h, w, 3] with h
    and w within canvas_shape(size), box float32 [top, left, height, width] of the crop in
    the window's pixels).  The pipeline pads windows into canvases as it batches them
    (padded_batch: one copy) and sends their valid sizes along.

    The crop window is train_pixels' (same seed, same draw) and so are the pixels: JPEGs
    decoded at the reduced DCT scale of "fast"; other formats decoded whole and cut to the
    window plus the bicubic filter's reach, so the resize sees the same neighbours.  A
    window that does not fit the canvas (a non-JPEG window much larger than the output, a
    JPEG over 16x the output) is resized here as "fast" does and shipped as a size x size
    window with an identity box."""
    side = canvas_shape(size)[0]

    def from_jpeg():
        shape = tf.io.extract_jpeg_shape(data)
        begin, extent = crop_window(shape, seed, scale, ratio)
        return decode_jpeg_window(data, shape, begin, extent, size)

    def from_other():
        image = decode_rgb(data)
        shape = tf.shape(image)[:2]
        begin, extent = crop_window(tf.shape(image), seed, scale, ratio)
        begin, extent = begin[:2], extent[:2]
        # The filter reaches 2 * max(extent / size, 1) input pixels beyond a window edge.
        reach = tf.cast(tf.math.ceil(2.0 * tf.maximum(tf.cast(extent, tf.float32) / size, 1.0)), tf.int32) + 1
        top_left = tf.maximum(begin - reach, 0)
        bottom_right = tf.minimum(begin + extent + reach, shape)
        crop = tf.slice(image, tf.concat([top_left, [0]], 0), tf.concat([bottom_right - top_left, [3]], 0))
        box = tf.cast(tf.concat([begin - top_left, extent], 0), tf.float32)
        return crop, box

    crop, box = tf.cond(is_jpeg(data), from_jpeg, from_other)

    def resized_here():
        pixels = tf.cast(_to_pixels(resize_bicubic(crop, box, size)), tf.uint8)
        return pixels, tf.constant([0.0, 0.0, size, size])

    crop, box = tf.cond(tf.reduce_all(tf.shape(crop)[:2] <= side), lambda: (crop, box), resized_here)
    crop.set_shape([None, None, 3])
    return crop, tf.ensure_shape(box, [4])


def dct_scale(extent: tf.Tensor, size: int) -> tf.Tensor:
    """The index in DCT_SCALES of the largest r with both sides of the window >= r * size (int32)."""
    shorter = tf.minimum(extent[0], extent[1])
    return tf.reduce_sum(tf.cast(shorter >= tf.constant(DCT_SCALES[1:], tf.int32) * size, tf.int32))


def decode_jpeg_window(data: tf.Tensor, shape: tf.Tensor, begin: tf.Tensor, extent: tf.Tensor,
                       size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """JPEG bytes, their shape and a full-scale window -> (uint8 pixels covering the window,
    decoded at the reduced scale 1/r of `dct_scale`; float32 [top, left, height, width] of
    the window in those pixels).  libjpeg's crop window is in reduced-scale pixels, so the
    window is widened to whole reduced pixels and its exact, fractional box returned."""

    def at_scale(r):
        def decode():
            # libjpeg's reduced image is ceil(side / r) pixels.
            reduced = (shape[:2] + r - 1) // r
            top_left = begin[:2] // r
            bottom_right = tf.minimum((begin[:2] + extent[:2] + r - 1) // r, reduced)
            window = tf.concat([top_left, bottom_right - top_left], 0)
            crop = tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=r, dct_method=JPEG_DCT)
            offset = tf.cast(begin[:2], tf.float32) / r - tf.cast(top_left, tf.float32)
            box = tf.concat([offset, tf.cast(extent[:2], tf.float32) / r], 0)
            return crop, box

        return decode

    crop, box = tf.switch_case(dct_scale(extent, size), [at_scale(r) for r in DCT_SCALES])
    crop.set_shape([None, None, 3])
    return crop, box


# -- resizing ---------------------------------------------------------------------------


def _bicubic_kernel(x: tf.Tensor) -> tf.Tensor:
    """Keys' cubic convolution with a = -0.5, PIL's (and TF's) bicubic filter, at x = |t| < 2
    (the caller masks the support)."""
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return tf.where(x < 1.0, near, far)


def _band_weights(n_in: tf.Tensor, start: tf.Tensor, extent: tf.Tensor, size: int):
    """PIL's resampling coefficients for both axes at once (each argument float32 [2, 1, 1, 1]:
    rows, columns), as bands of RESIZE_TILE output rows.

    As precompute_coeffs in Pillow's Resample.c: output i is centred at start + (i + 0.5) *
    scale and takes the inputs within 2 * max(scale, 1) of it, weighted by the cubic kernel
    stretched by max(scale, 1) and normalised to sum 1.  Returns (the first input of each
    tile, int32 [2, tiles]; weights float32 [2, tiles, tile, span] over inputs first ..
    first + span, span the larger of the two; each axis's own span, int32 [2])."""
    tile = RESIZE_TILE
    tiles = -(-size // tile)
    scale = extent / size
    stretch = tf.maximum(scale, 1.0)
    support = 2.0 * stretch
    offsets = tf.constant([[[t * tile + k + 0.5] for k in range(tile)] for t in range(tiles)])  # [tiles, tile, 1]
    centers = start + offsets * scale  # [2, tiles, tile, 1]
    low = tf.clip_by_value(tf.floor(centers + (0.5 - support)), 0.0, n_in)
    high = tf.clip_by_value(tf.floor(centers + (0.5 + support)), 0.0, n_in)
    first = low[:, :, :1]  # [2, tiles, 1, 1]
    spans = tf.cast(tf.reduce_max(high[:, :, -1:] - first, axis=[1, 2, 3]), tf.int32)
    x = first + tf.cast(tf.range(tf.reduce_max(spans)), tf.float32)  # [2, tiles, 1, span]
    distance = tf.abs(x - centers + 0.5) / stretch
    weights = tf.where((x >= low) & (x < high) & (distance < 2.0), _bicubic_kernel(distance), 0.0)
    weights = tf.math.divide_no_nan(weights, tf.reduce_sum(weights, -1, keepdims=True))
    return tf.cast(first[:, :, 0, 0], tf.int32), weights, spans


def _resample_rows(rows: tf.Tensor, n: tf.Tensor, first: tf.Tensor, weights: tf.Tensor, span: tf.Tensor,
                   size: int) -> tf.Tensor:
    """float32 [n, m] -> [size, m] with one axis's bands: a batch of small dense matmuls, one
    per tile of output rows, each over the input rows its tile reaches."""
    positions = tf.minimum(first[:, None] + tf.range(span), n - 1)  # [tiles, span]
    out = tf.matmul(weights[:, :, :span], tf.gather(rows, positions))  # [tiles, tile, m]
    out = tf.reshape(out, [-1, tf.shape(rows)[1]])
    return out if size % RESIZE_TILE == 0 else out[:size]


def resize_bicubic(image: tf.Tensor, box: tf.Tensor, size: int) -> tf.Tensor:
    """[h, w, c] (any real dtype) -> float32 [size, size, c]: the box (float32 [top, left,
    height, width] in pixels, fractions allowed) resampled with antialiased bicubic, as
    PIL's Image.resize((size, size), BICUBIC, box=...) computes it on a float image: one
    separable pass per axis in floating point, no rounding in between.  The coefficients
    of both axes are computed together: per image, the number of small ops matters as
    much as the matmuls."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    first, weights, spans = _band_weights(
        tf.reshape(tf.cast(shape[:2], tf.float32), [2, 1, 1, 1]),
        tf.reshape(box[:2], [2, 1, 1, 1]),
        tf.reshape(box[2:], [2, 1, 1, 1]),
        size,
    )
    pixels = tf.reshape(tf.cast(image, tf.float32), [height, -1])
    rows = _resample_rows(pixels, height, first[0], weights[0], spans[0], size)  # [size, width * c]
    columns = tf.reshape(tf.transpose(tf.reshape(rows, [size, width, -1]), [1, 0, 2]), [width, -1])
    columns = _resample_rows(columns, width, first[1], weights[1], spans[1], size)  # [size (x), size (y) * c]
    return tf.transpose(tf.reshape(columns, [size, size, -1]), [1, 0, 2])


# -- evaluation -------------------------------------------------------------------------


def eval_image(data: tf.Tensor, size: int, family: str = "clip") -> tf.Tensor:
    """Encoded bytes -> float32 [size, size, 3], normalised: CLIP's shorter side + centre
    crop, or SigLIP's resize of the whole image."""
    image = decode_rgb(data)
    if get_family(family).resize == "squash":
        resized = tf.ensure_shape(resize_like_pil(image, tf.constant(size), tf.constant(size)), [size, size, 3])
        return normalize(resized, family)
    return normalize(resize_and_center_crop(image, size), family)


def resize_like_pil(image: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Bicubic resize as PIL does it: a horizontal pass, rounded and clipped to uint8, then
    a vertical pass, each skipped when its side does not change.  One 2-D float resize
    differs from PIL by up to ~20 levels where PIL's intermediate clipping bites (noise,
    hard edges when upsampling); the two passes bring that to a few levels."""
    pixels = tf.cast(image, tf.float32)
    shape = tf.shape(image)

    def horizontal():
        return _to_pixels(tf.image.resize(pixels, tf.stack([shape[0], width]), method="bicubic", antialias=True))

    pixels = tf.cond(tf.equal(shape[1], width), lambda: pixels, horizontal)

    def vertical():
        return _to_pixels(tf.image.resize(pixels, tf.stack([height, width]), method="bicubic", antialias=True))

    return tf.cond(tf.equal(shape[0], height), lambda: pixels, vertical)


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [h, w, 3] -> float32 [size, size, 3] pixel values in [0, 255]."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    # int(size * long / short) as Python computes it: float64 division, then truncation.
    new_long = tf.cast(tf.floor(size * tf.cast(long, tf.float64) / tf.cast(short, tf.float64)), tf.int32)
    new_height = tf.where(height <= width, size, new_long)
    new_width = tf.where(height <= width, new_long, size)
    resized = resize_like_pil(image, new_height, new_width)
    # tf.round rounds half to even, as Python's round() in torchvision's CenterCrop.
    top = tf.cast(tf.round(tf.cast(new_height - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_width - size, tf.float32) / 2.0), tf.int32)
    tf.debugging.assert_greater_equal(tf.minimum(new_height, new_width), size, message="image smaller than the crop")
    crop = tf.slice(resized, tf.stack([top, left, 0]), [size, size, 3])
    return tf.ensure_shape(crop, [size, size, 3])
