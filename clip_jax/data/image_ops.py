"""Image decoding and CLIP's crops in the TF graph (so tf.data can run them in parallel).

- Decoding: JPEG, PNG, WebP, GIF (first frame), BMP through tf.io; grey, CMYK and alpha
  images become RGB.  Undecodable bytes raise inside the graph; the pipeline catches and
  counts them.
- Training: a random resized crop (area fraction `scale`, aspect ratio `ratio`, as
  torchvision's RandomResizedCrop) drawn with a stateless seed, so an example's crop is a
  function of (seed, position in the stream) and survives a resume.  JPEGs are decoded
  only inside the crop window (decode_and_crop_jpeg); other formats are decoded whole.
- Evaluation: the shorter side to `size` (the longer to int(size * long / short), as PIL),
  then a centre crop with round-half-even offsets (torchvision's round()), like
  clip_jax.preprocess.preprocess.
- Resizing is bicubic with antialias, in PIL's two passes (horizontal, round to uint8,
  vertical, round to uint8), so results match PIL to 1 level in most cases; Pillow 13
  sometimes runs the vertical pass first, and then edges and noise can differ by more
  (tests/test_data_pipeline.py measures it).  JPEGs use the accurate integer IDCT, as PIL.
  Then CLIP's mean and std.
- `style="siglip"` (a SigLIP model's family): evaluation resizes the whole image to
  size x size (no crop, as transformers' SiglipImageProcessor), and both transforms
  normalise to [-1, 1] (clip_jax.preprocess.NORMALIZATION).
"""
from __future__ import annotations

import tensorflow as tf

from clip_jax.preprocess import NORMALIZATION, check_style

DEFAULT_RATIO = (3 / 4, 4 / 3)
JPEG_DCT = "INTEGER_ACCURATE"


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


def normalize(pixels: tf.Tensor, style: str = "clip") -> tf.Tensor:
    """[0, 255] float -> float32 normalised for `style` (CLIP's mean and std, or SigLIP's [-1, 1])."""
    check_style(style)
    mean, std = NORMALIZATION[style]
    return (pixels / 255.0 - tf.constant(mean)) / tf.constant(std)


def train_image(data: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.9, 1.0), ratio=DEFAULT_RATIO,
                style: str = "clip") -> tf.Tensor:
    """Random resized crop of encoded bytes -> float32 [size, size, 3], normalised."""

    def window(shape):
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
        return begin, extent

    def from_jpeg():
        begin, extent = window(tf.io.extract_jpeg_shape(data))
        crop_window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
        return tf.io.decode_and_crop_jpeg(data, crop_window, channels=3, dct_method=JPEG_DCT)

    def from_other():
        image = decode_rgb(data)
        begin, extent = window(tf.shape(image))
        return tf.slice(image, begin, extent)

    crop = tf.cond(is_jpeg(data), from_jpeg, from_other)
    crop.set_shape([None, None, 3])
    return normalize(resize_like_pil(crop, tf.constant(size), tf.constant(size)), style)


def eval_image(data: tf.Tensor, size: int, style: str = "clip") -> tf.Tensor:
    """Encoded bytes -> float32 [size, size, 3], normalised: CLIP's shorter side + centre
    crop, or SigLIP's resize of the whole image."""
    image = decode_rgb(data)
    if style == "siglip":
        resized = tf.ensure_shape(resize_like_pil(image, tf.constant(size), tf.constant(size)), [size, size, 3])
        return normalize(resized, style)
    return normalize(resize_and_center_crop(image, size), style)


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
