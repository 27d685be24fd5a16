"""The "device" training transform: the host's crop windows (image_ops.train_window)
resized inside the step (clip_jax.window_resize) against PIL and the host's "fast" crop."""
import io

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from clip_jax import window_resize
from clip_jax.data import image_ops
from tests.helpers.data import encode, photo_like


def pil_float_resize(pixels: np.ndarray, box, size: int) -> np.ndarray:
    """PIL's antialiased bicubic of a float image (mode "F", no rounding), per channel."""
    top, left, height, width = box
    channels = [Image.fromarray(pixels[..., c].astype(np.float32), "F")
                .resize((size, size), Image.BICUBIC, box=(left, top, left + width, top + height))
                for c in range(pixels.shape[-1])]
    return np.stack([np.asarray(c) for c in channels], -1)


@pytest.mark.parametrize("valid, box, size", [
    ((37, 53), (0.0, 0.0, 37.0, 53.0), 16),        # odd sizes, whole window
    ((61, 90), (3.25, 7.5, 40.75, 55.125), 24),    # fractional box inside the window (reduced-scale JPEG)
    ((9, 13), (0.0, 0.0, 9.0, 13.0), 32),          # upscale
    ((3, 2), (0.0, 0.5, 3.0, 1.5), 8),             # tiny
    ((32, 48), (1.0, 2.0, 30.0, 44.0), 16),        # fills the canvas exactly
])
def test_resize_windows_matches_pil_float_resize(valid, box, size):
    rs = np.random.RandomState(sum(valid) + size)
    height, width = valid[0] + 5, valid[1] + 7
    canvas = np.full((height, width, 3), 255, np.uint8)  # the padding must not leak in
    pixels = rs.randint(0, 256, (*valid, 3)).astype(np.uint8)
    canvas[: valid[0], : valid[1]] = pixels
    got = np.asarray(window_resize.resize_windows(jnp.asarray(canvas[None]), jnp.asarray([box], jnp.float32),
                                                  jnp.asarray([valid], jnp.int32), size))[0]
    want = pil_float_resize(pixels.astype(np.float32), box, size)
    assert got.shape == (size, size, 3)
    np.testing.assert_allclose(got, want, atol=0.02)


def in_canvas(window: tf.Tensor, size: int) -> tf.Tensor:
    """A train_window's pixels zero-padded to canvas_shape(size), as the pipeline's
    padded_batch lays them out."""
    height, width = image_ops.canvas_shape(size)
    shape = tf.shape(window)
    return tf.pad(window, [[0, height - shape[0]], [0, width - shape[1]], [0, 0]])


def as_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def device_crop(data: bytes, size: int, seed, scale) -> tuple[np.ndarray, bool]:
    window, box = image_ops.train_window(tf.constant(data), size, seed, scale)
    canvas, valid = in_canvas(window, size), tf.shape(window)[:2]
    assert canvas.shape == (*image_ops.canvas_shape(size), 3) and canvas.dtype == tf.uint8
    out = window_resize.crops(canvas.numpy()[None], box.numpy()[None], valid.numpy()[None], size)
    host_resized = tuple(valid.numpy()) == (size, size) and tuple(box.numpy()) == (0, 0, size, size)
    return np.asarray(out)[0], host_resized


def photo(height, width, seed=0):
    return Image.fromarray(photo_like(height, width, seed))


CASES = {
    "jpeg landscape": lambda: encode(photo_like(300, 451, 1), "JPEG", quality=90),
    "jpeg portrait": lambda: encode(photo_like(700, 333, 2), "JPEG", quality=90),
    "jpeg large (1/4 DCT scale)": lambda: encode(photo_like(1100, 1500, 3), "JPEG", quality=90),
    "jpeg panorama": lambda: encode(photo_like(200, 1400, 4), "JPEG", quality=90),
    "jpeg smaller than the output": lambda: encode(photo_like(41, 29, 5), "JPEG", quality=90),
    "jpeg greyscale": lambda: as_bytes(photo(200, 260, 6).convert("L"), "JPEG", quality=90),
    "jpeg CMYK": lambda: as_bytes(photo(180, 240, 7).convert("CMYK"), "JPEG", quality=90),
    "png palette": lambda: as_bytes(photo(150, 170, 8).convert("P"), "PNG"),
    "png greyscale": lambda: as_bytes(photo(130, 90, 9).convert("L"), "PNG"),
    "png larger than the canvas": lambda: encode(photo_like(900, 1300, 10), "PNG"),
    "webp with alpha": lambda: as_bytes(photo(160, 200, 11).convert("RGBA"), "WEBP", quality=90),
    "png 1 x 1": lambda: encode(photo_like(1, 1, 12), "PNG"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_device_crops_match_the_fast_transform(name):
    """Same window, same pixels, same resize arithmetic: the device's float crop is the
    host's "fast" crop before rounding, so they differ by at most half a level (a level
    where the host resized a window that did not fit the canvas: both round there)."""
    data, size = CASES[name](), 64
    for scale in ((0.9, 1.0), (0.08, 1.0)):
        for i in range(4):
            seed = tf.constant([i, 11], tf.int64)
            fast = image_ops.train_pixels(tf.constant(data), size, seed, scale).numpy().astype(np.float32)
            got, host_resized = device_crop(data, size, seed, scale)
            assert got.shape == (size, size, 3) and got.min() >= 0 and got.max() <= 255
            assert np.abs(got - fast).max() <= (1.0 if host_resized else 0.51), (name, scale, i)


def test_window_fields_and_flops():
    data = tf.constant(encode(photo_like(700, 333, 2), "JPEG", quality=90))
    window, box = image_ops.train_window(data, 32, tf.constant([0, 1], tf.int64))
    canvas, valid = in_canvas(window, 32), tf.shape(window)[:2]
    assert image_ops.canvas_shape(32) == (90, 90) and image_ops.canvas_shape(224) == (602, 602)
    assert (canvas.numpy()[int(valid[0]):] == 0).all() and (canvas.numpy()[:, int(valid[1]):] == 0).all()
    np.testing.assert_array_equal(canvas.numpy()[:int(valid[0]), :int(valid[1])], window.numpy())
    # Two einsums: the width pass [size, W] on every canvas row, then the height pass.
    assert window_resize.added_flops(224, (602, 602)) == 2 * 3 * (602 * 602 * 224 + 224 * 602 * 224)


@pytest.mark.parametrize("shape", [(256, 455), (455, 256), (300, 300), (512, 912), (912, 512), (1100, 1500)])
def test_windows_of_real_shapes_fit_the_canvas(shape):
    """Every crop of a JPEG of img2dataset's shapes (16:9 included, where the sampler finds
    no window and the torchvision-style fallback applies) fits the canvas: none is
    resized on the host."""
    data = tf.constant(encode(photo_like(*shape, 0), "JPEG", quality=90))
    for scale in ((0.9, 1.0), (0.08, 1.0)):
        for i in range(16):
            window, box = image_ops.train_window(data, 224, tf.constant([i, 3], tf.int64), scale)
            assert tuple(box.numpy()) != (0, 0, 224, 224), (scale, i, window.shape)
            assert max(window.shape[:2]) <= image_ops.canvas_shape(224)[0]


@pytest.mark.parametrize("shape", [(200, 1400), (1400, 200), (256, 455), (455, 256), (300, 451), (451, 300)])
def test_crop_window_falls_back_as_torchvision(shape):
    """Where no window of area 90-100% has an aspect ratio in [3/4, 4/3] (any image wider
    than 4:3 or taller than 3:4 of them), torchvision's RandomResizedCrop, which open_clip
    trains with, takes the largest centred window in the ratio range; crop_window takes
    the same one, where TF's sampler alone would return the whole image."""
    import torch
    from torchvision.transforms import RandomResizedCrop

    scale, ratio = (0.9, 1.0), image_ops.DEFAULT_RATIO
    top, left, height, width = RandomResizedCrop.get_params(torch.zeros(3, *shape), list(scale), list(ratio))
    for i in range(4):
        begin, extent = image_ops.crop_window(tf.constant([*shape, 3]), tf.constant([i, 5], tf.int64), scale, ratio)
        assert (int(begin[0]), int(begin[1]), int(extent[0]), int(extent[1])) == (top, left, height, width)
