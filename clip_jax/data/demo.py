"""Synthetic image-caption data made on the fly: learnable on a CPU, with held-out combinations.

Each image shows one or two shapes of one colour, shape and size, placed in one region;
its caption names all five attributes, e.g. "two small red circles on the left" or
"at the top, a large blue square".  Attributes: 6 colours x 3 shapes x 2 sizes x
2 counts x 4 positions.

Held out: the colour+shape pairs in HELDOUT never appear in "train" or "val"; they make up
"heldout".  Every held-out colour and shape does appear in training with other partners,
so classifying held-out images among all 18 colour+shape prompts (`class_prompts()`,
labels = index into it) tests composition, not memorisation: chance is 1/18.

Splits: "train" (100,000 examples by default), "val" (1,000, seen pairs, new samples),
"heldout" (1,000, held-out pairs only).  Example i of a split is a pure function of
(seed, split, i), so the data needs no files and a resumed iterator sees the same pixels.
Images are 32 px by default (a ViT with patch 8 sees 4x4 patches), stored as PNG bytes so
they travel through the same decode path as real data.

Styles, distribution shifts of the same classes (and the same draws): "filled" (the
default: solid shapes on a dark background, all training data), "outline" (only the
shapes' outlines, on the dark background) and "sketch" (outlines on a light background),
e.g. `demo:val?style=outline`.
"""
from __future__ import annotations

import io
import itertools

import numpy as np
from PIL import Image

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 200),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.12, "large": 0.21}  # radius as a fraction of the image side
COUNTS = {1: "a", 2: "two"}
POSITIONS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
HELDOUT = frozenset({("red", "triangle"), ("green", "circle"), ("blue", "square"), ("purple", "triangle")})
PAIRS = tuple(itertools.product(COLOURS, SHAPES))  # class order: label = PAIRS.index((colour, shape))
SPLITS = {"train": (0, 100_000), "val": (1, 1_000), "heldout": (2, 1_000)}  # name -> (stream id, size)
DEFAULT_SIZE = 32
STYLES = ("filled", "outline", "sketch")


def class_prompts() -> list[str]:
    """Zero-shot class prompts for the colour+shape label of every split, in label order."""
    return [f"a {colour} {shape}" for colour, shape in PAIRS]


def heldout_labels() -> list[int]:
    return sorted(PAIRS.index(pair) for pair in HELDOUT)


def caption(count: int, size: str, colour: str, shape: str, position: str, template: int) -> str:
    noun = shape + ("s" if count > 1 else "")
    phrase = f"{COUNTS[count]} {size} {colour} {noun}"
    return f"{phrase} {POSITIONS[position]}" if template == 0 else f"{POSITIONS[position]}, {phrase}"


class DemoDataset:
    """Indexable synthetic split: `example(i)` -> {"png", "caption", "label", "attributes"}."""

    def __init__(self, split: str, image_size: int = DEFAULT_SIZE, num_examples: int | None = None, seed: int = 0,
                 style: str = "filled"):
        if split not in SPLITS:
            raise ValueError(f"demo split must be one of {sorted(SPLITS)}, got {split!r} (spec 'demo:train')")
        if style not in STYLES:
            raise ValueError(f"demo style must be one of {', '.join(STYLES)}, got {style!r} "
                             "(spec 'demo:val?style=outline')")
        self.style = style
        if image_size < 16:
            raise ValueError(f"demo image size must be at least 16 px, got {image_size}")
        self.split, self.image_size, self.seed = split, image_size, seed
        self.stream, default_n = SPLITS[split]
        self.num_examples = default_n if num_examples is None else num_examples
        if self.num_examples <= 0:
            raise ValueError(f"demo: n must be positive, got {self.num_examples}")
        self.pairs = [p for p in PAIRS if (p in HELDOUT) == (split == "heldout")]

    def __len__(self) -> int:
        return self.num_examples

    def attributes(self, rng: np.random.Generator) -> dict:
        colour, shape = self.pairs[rng.integers(len(self.pairs))]
        return {
            "colour": colour,
            "shape": shape,
            "size": list(SIZES)[rng.integers(len(SIZES))],
            "count": int(rng.integers(1, 3)),
            "position": list(POSITIONS)[rng.integers(len(POSITIONS))],
        }

    def example(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"demo:{self.split} has {self.num_examples} examples; index {index} is out of range")
        rng = np.random.default_rng([self.seed, self.stream, index])
        attrs = self.attributes(rng)
        pixels = render(attrs, self.image_size, rng, self.style)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return {
            "png": buffer.getvalue(),
            "pixels": pixels,
            "caption": caption(template=int(rng.integers(2)), **attrs),
            "label": PAIRS.index((attrs["colour"], attrs["shape"])),
            "attributes": attrs,
        }


def render(attrs: dict, n: int, rng: np.random.Generator, style: str = "filled") -> np.ndarray:
    """uint8 [n, n, 3]: noisy background, `count` shapes inside the named half; filled, or
    (styles "outline", "sketch") their outlines, on a dark or ("sketch") light background."""
    background = rng.integers(15, 70)
    if style == "sketch":
        background = 255 - background
    image = np.clip(background + rng.normal(0, 8, (n, n, 3)), 0, 255)
    radius = SIZES[attrs["size"]] * n
    half = n / 2
    x0, x1, y0, y1 = {
        "left": (0, half, 0, n),
        "right": (half, n, 0, n),
        "top": (0, n, 0, half),
        "bottom": (0, n, half, n),
    }[attrs["position"]]
    centres: list[tuple[float, float]] = []
    for _ in range(200):  # rejection sampling of non-overlapping centres; a few tries suffice
        if len(centres) == attrs["count"]:
            break
        c = (rng.uniform(x0 + radius, x1 - radius), rng.uniform(y0 + radius, y1 - radius))
        if all((c[0] - d[0]) ** 2 + (c[1] - d[1]) ** 2 > (2 * radius + 1) ** 2 for d in centres):
            centres.append(c)
    colour = np.array(COLOURS[attrs["colour"]], np.float64) + rng.uniform(-20, 20, 3)
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    for cx, cy in centres:
        dx, dy = xs - cx, ys - cy
        if attrs["shape"] == "circle":
            mask = dx**2 + dy**2 <= radius**2
        elif attrs["shape"] == "square":
            mask = (np.abs(dx) <= 0.85 * radius) & (np.abs(dy) <= 0.85 * radius)
        else:  # upward triangle: apex at top, base at the bottom of the radius box
            t = (dy + radius) / (2 * radius)  # 0 at apex, 1 at base
            mask = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * radius)
        if style in ("outline", "sketch"):  # the shape's pixels within n/20 px of its edge
            mask = mask & ~_eroded(mask, max(1, round(n / 20)))
        image[mask] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask shrunk by `steps` pixels (4-neighbour erosion)."""
    for _ in range(steps):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        mask = inner
    return mask
