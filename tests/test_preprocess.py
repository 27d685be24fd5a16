"""The eval transform against open_clip's on real PIL images of awkward kinds."""
import numpy as np
import pytest
from PIL import Image

from clip_jax import preprocess, preprocess_batch

open_clip = pytest.importorskip("open_clip")


def images():
    rs = np.random.RandomState(0)
    rgb = lambda h, w: Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    smooth = Image.fromarray(
        (np.stack(np.meshgrid(np.linspace(0, 255, 301), np.linspace(0, 255, 257)), -1)[..., [0, 1, 0]]).astype(np.uint8)
    )
    return {
        "rgb_square": rgb(224, 224),
        "rgb_wide_odd": rgb(257, 301),
        "rgb_tall_odd": rgb(403, 229),
        "rgb_offset_3_mod_4": rgb(227, 231),  # crop offsets where floor and round differ
        "rgb_tiny": rgb(17, 40),
        "rgb_huge_ratio": rgb(230, 1000),
        "smooth": smooth,
        "palette": rgb(250, 300).convert("P", palette=Image.ADAPTIVE, colors=64),
        "rgba": Image.fromarray(rs.randint(0, 256, (260, 280, 4), dtype=np.uint8), "RGBA"),
        "greyscale": rgb(300, 260).convert("L"),
        "cmyk": rgb(240, 250).convert("CMYK"),
    }


@pytest.mark.parametrize("size", [224, 336])
@pytest.mark.parametrize("kind", sorted(images()))
def test_matches_open_clip_eval_transform(kind, size):
    image = images()[kind]
    transform = open_clip.image_transform(size, is_train=False)
    expected = transform(image).numpy().transpose(1, 2, 0)
    got = preprocess(image, size)
    assert got.shape == (size, size, 3) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5


def test_batch_layout_and_type_errors():
    batch = preprocess_batch([Image.new("RGB", (300, 200)), Image.new("L", (50, 80))], 32)
    assert batch.shape == (2, 32, 32, 3)
    with pytest.raises(TypeError, match="PIL"):
        preprocess(np.zeros((10, 10, 3)))
