"""The synthetic demo data: determinism, attributes in captions, held-out combinations."""
import numpy as np
import pytest

from clip_jax import data
from clip_jax.data import demo


def test_examples_are_pure_functions_of_the_index():
    a, b = demo.DemoDataset("train"), demo.DemoDataset("train")
    for i in (0, 1, 99_999):
        x, y = a.example(i), b.example(i)
        assert x["png"] == y["png"] and x["caption"] == y["caption"]
    assert a.example(0)["png"] != a.example(1)["png"]
    assert demo.DemoDataset("train", seed=1).example(0)["png"] != a.example(0)["png"]
    with pytest.raises(IndexError):
        a.example(100_000)


def test_captions_name_the_drawn_attributes():
    dataset = demo.DemoDataset("val", image_size=32)
    for i in range(50):
        example = dataset.example(i)
        attrs, caption, pixels = example["attributes"], example["caption"], example["pixels"]
        for word in (attrs["colour"], attrs["size"], attrs["shape"], demo.POSITIONS[attrs["position"]]):
            assert word in caption
        phrase = f"{'two' if attrs['count'] == 2 else 'a'} {attrs['size']} {attrs['colour']} {attrs['shape']}"
        assert caption.startswith(phrase) or caption.startswith(demo.POSITIONS[attrs["position"]] + ", " + phrase)
        # The shape's pixels have its colour and lie in the named half.
        colour = np.array(demo.COLOURS[attrs["colour"]])
        mask = np.abs(pixels.astype(int) - colour).max(-1) <= 21
        assert mask.sum() >= 6, (i, attrs)
        ys, xs = np.nonzero(mask)
        centre = {"left": xs.mean() < 16, "right": xs.mean() >= 16, "top": ys.mean() < 16, "bottom": ys.mean() >= 16}
        assert centre[attrs["position"]], (i, attrs)


def test_heldout_pairs_never_in_train_and_only_in_heldout():
    train = demo.DemoDataset("train")
    seen = {tuple(train.example(i)["attributes"][k] for k in ("colour", "shape")) for i in range(3000)}
    assert not seen & demo.HELDOUT
    assert seen == set(demo.PAIRS) - demo.HELDOUT  # every other pair appears
    heldout = demo.DemoDataset("heldout")
    pairs = {tuple(heldout.example(i)["attributes"][k] for k in ("colour", "shape")) for i in range(300)}
    assert pairs == set(demo.HELDOUT)
    # Every held-out colour and shape is seen in training with another partner.
    for colour, shape in demo.HELDOUT:
        assert any(c == colour for c, _ in seen) and any(s == shape for _, s in seen)


def test_zero_shot_classes_and_eval_labels():
    names = data.class_names("demo:heldout")
    assert len(names) == 18 and names[demo.PAIRS.index(("red", "triangle"))] == "a red triangle"
    labels = np.concatenate(
        [b["labels"][b["mask"]] for b in data.eval_batches("demo:heldout?n=40", batch_size=16, image_size=32)]
    )
    assert len(labels) == 40 and set(labels.tolist()) <= set(demo.heldout_labels())
    captions = [
        c for b in data.eval_batches("demo:heldout?n=5", batch_size=8, image_size=32) for c in b["captions"][:5]
    ]
    assert all(len(c) == 1 for c in captions)


def test_demo_train_iterator_resumes():
    make = lambda: data.train_iterator("demo:train?n=3000", batch_size=32, image_size=32, seed=0, shuffle_buffer=200)  # noqa: E731
    ref = make()
    batches = [next(ref) for _ in range(4)]
    it = make()
    next(it), next(it)
    resumed = make()
    resumed.set_state(it.get_state())
    for want in batches[2:]:
        np.testing.assert_array_equal(next(resumed)["images"], want["images"])


def test_bad_options():
    with pytest.raises(ValueError, match="at least 16"):
        data.open_sources("demo:train?size=8")
    with pytest.raises(ValueError, match="n must be positive"):
        data.open_sources("demo:train?n=0")
    with pytest.raises(ValueError, match="style must be one of filled, outline, sketch"):
        data.open_sources("demo:val?style=photo")


def test_outline_style_is_the_same_examples_drawn_otherwise():
    from clip_jax.data.demo import DemoDataset

    filled, outline, sketch = (DemoDataset("val", style=s) for s in ("filled", "outline", "sketch"))
    for i in range(20):
        a, b, c = filled.example(i), outline.example(i), sketch.example(i)
        assert (a["caption"], a["label"], a["attributes"]) == (b["caption"], b["label"], b["attributes"]) \
            == (c["caption"], c["label"], c["attributes"])
        # the outline keeps the background and fewer of the shape's pixels; the sketch is light
        shape = np.abs(a["pixels"].astype(int) - b["pixels"].astype(int)).sum(-1) > 0
        assert shape.any() and np.median(a["pixels"]) < 100 and np.median(c["pixels"]) > 150
