"""Realistic evaluation data made on the spot (no downloads): what real collections have
and clean synthetic sets lack.

  * exact duplicate captions: one boilerplate caption shared by a large share of the
    images (web collections have "image not available"-style titles), and the short
    colour/shape captions repeat naturally;
  * duplicate images: the same bytes under several keys (re-uploads);
  * greyscale ("L") and palette ("P") PNGs next to RGB ones;
  * odd sizes: very wide, very tall, smaller than the model's input;
  * several captions for some images and none for others.

Images show a coloured shape on a textured background and captions name colour and shape,
so a briefly trained model has real signal to find.  Everything is a pure function of the
seed.  Self-contained (PIL, NumPy and clip_jax's shard writer only), so it can move with
the other test helpers.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30),
           "purple": (140, 40, 170), "orange": (245, 140, 20)}
SHAPES = ("circle", "square", "triangle")
BOILERPLATE = "Stock photo - image not available in your region"
# (width, height): square, wide, tall, tiny, and the odd ones real crawls have; the big
# ones are rarer, to keep the data quick to make and decode.
SIZES = ((64, 64), (1000, 230), (31, 517), (97, 41), (40, 40), (256, 192), (33, 33), (120, 300), (48, 80))
SIZE_WEIGHTS = np.array([6, 1, 2, 4, 6, 1, 4, 2, 6]) / 32
MODES = ("RGB", "RGB", "RGB", "L", "P")  # greyscale and palette PNGs are 1 in 5 each
TEMPLATES = ("a {colour} {shape}", "{colour} {shape} on a textured background", "photo of a {shape}, {colour}",
             "{shape} {colour}")
WORDS = ("vintage", "closeup", "hd", "free", "isolated", "texture", "design", "icon", "poster", "sample")


def draw(colour: str, shape: str, size: tuple[int, int], mode: str, seed: int) -> bytes:
    """PNG bytes of one image in the given PIL mode."""
    rs = np.random.RandomState(seed)
    width, height = size
    background = rs.randint(90, 170) + rs.normal(0, 18, (height, width, 1)) + rs.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    side = min(width, height)
    extent = max(2, int(side * rs.uniform(0.5, 0.9)))
    left, top = rs.randint(0, width - extent + 1), rs.randint(0, height - extent + 1)
    box = (left, top, left + extent - 1, top + extent - 1)
    pen = ImageDraw.Draw(image)
    fill = tuple(int(np.clip(c + rs.randint(-15, 16), 0, 255)) for c in COLOURS[colour])
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)
    if mode == "L":
        image = image.convert("L")
    elif mode == "P":
        image = image.quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclasses.dataclass
class Item:
    key: str
    png: bytes
    colour: str
    shape: str
    mode: str
    size: tuple[int, int]
    captions: list[str]
    duplicate_of: int | None = None  # index of the item whose bytes this one repeats


def _captions(rs: np.random.RandomState, colour: str, shape: str) -> list[str]:
    count = rs.choice([1, 1, 1, 2, 3])
    out = []
    for _ in range(count):
        text = TEMPLATES[rs.randint(len(TEMPLATES))].format(colour=colour, shape=shape)
        if rs.rand() < 0.4:  # a keyword or two, as web titles have; many captions stay duplicates
            text += " " + " ".join(rs.choice(WORDS, rs.randint(1, 3), replace=False))
        out.append(text)
    return out


def captioned_items(n: int, seed: int = 0, boilerplate_share: float = 0.17, uncaptioned_share: float = 0.05,
                    duplicate_share: float = 0.05) -> list[Item]:
    """n image-caption records: `boilerplate_share` of the images have only the boilerplate
    caption, `uncaptioned_share` have no caption, `duplicate_share` repeat an earlier image's
    bytes (with their own captions); the rest have 1-3 colour/shape captions."""
    rs = np.random.RandomState(seed)
    kinds = np.array(["normal"] * n, dtype=object)
    order = rs.permutation(n)
    n_boiler, n_none = int(round(boilerplate_share * n)), int(round(uncaptioned_share * n))
    kinds[order[:n_boiler]] = "boilerplate"
    kinds[order[n_boiler:n_boiler + n_none]] = "none"
    items: list[Item] = []
    for i in range(n):
        duplicate = i > 10 and rs.rand() < duplicate_share
        original = None
        if duplicate:
            picked = rs.randint(len(items))
            original = items[picked].duplicate_of if items[picked].duplicate_of is not None else picked
            source = items[original]
            colour, shape, mode, size, png = source.colour, source.shape, source.mode, source.size, source.png
        else:
            colour, shape = rs.choice(list(COLOURS)), rs.choice(SHAPES)
            mode, size = MODES[rs.randint(len(MODES))], SIZES[rs.choice(len(SIZES), p=SIZE_WEIGHTS)]
            png = draw(colour, shape, size, mode, seed * 1_000_003 + i)
        captions = ({"boilerplate": [BOILERPLATE], "none": []}[kinds[i]] if kinds[i] != "normal"
                    else _captions(rs, colour, shape))
        items.append(Item(f"s{i:05d}", png, colour, shape, mode, size, captions, original))
    return items


def write_shards(directory: str, items: list[Item], per_shard: int = 300) -> str:
    """WebDataset shards (key.png + key.json {"captions": [...]}) of `items`; returns the spec."""
    from clip_jax.data.wds_writer import ShardWriter

    with ShardWriter(os.path.join(directory, "realistic"), samples_per_shard=per_shard) as writer:
        for item in items:
            writer.write(item.key, {"png": item.png, "json": json.dumps({"captions": item.captions})})
        return writer.spec()


def class_folder(root: str, per_class: int, seed: int = 0, duplicate_share: float = 0.05) -> str:
    """A folder dataset (one subfolder per colour) of the same kinds of images: greyscale
    and palette PNGs, odd sizes, duplicate images (some repeated in another class, as
    mislabelled re-uploads are); returns the folder: spec."""
    rs = np.random.RandomState(seed)
    written: list[bytes] = []
    for label, colour in enumerate(COLOURS):
        os.makedirs(os.path.join(root, colour), exist_ok=True)
        for i in range(per_class):
            if written and rs.rand() < duplicate_share:
                png = written[rs.randint(len(written))]
            else:
                shape = rs.choice(SHAPES)  # (the order of the draws fixes the data)
                size = SIZES[rs.choice(len(SIZES), p=SIZE_WEIGHTS)]
                png = draw(colour, shape, size, MODES[rs.randint(len(MODES))], seed * 1_000_003 + label * 10_000 + i)
            written.append(png)
            with open(os.path.join(root, colour, f"{i:04d}.png"), "wb") as f:
                f.write(png)
    return f"folder:{root}"


def describe(items: list[Item]) -> dict:
    """Counts of the realistic features of a set of records (for test output and checks)."""
    captions = [c for item in items for c in item.captions]
    values, counts = np.unique(captions, return_counts=True)
    return {
        "images": len(items),
        "captions": len(captions),
        "largest_duplicate_caption_group": int(counts.max()) if len(counts) else 0,
        "captions_in_duplicate_groups": int(counts[counts > 1].sum()),
        "boilerplate_share": float(np.mean([item.captions == [BOILERPLATE] for item in items])),
        "uncaptioned": sum(not item.captions for item in items),
        "multi_caption": sum(len(item.captions) > 1 for item in items),
        "duplicate_images": sum(item.duplicate_of is not None for item in items),
        "modes": {m: sum(item.mode == m for item in items) for m in sorted(set(MODES))},
        "sizes": sorted({item.size for item in items}),
    }
