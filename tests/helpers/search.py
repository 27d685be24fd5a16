"""A folder of images whose text queries have known answers, and a tiny model that knows them.

`shapes_folder` draws coloured shapes (4 colours x 3 shapes, on dark backgrounds of odd
sizes and aspect ratios) in every format the index reads, plus realistic odd files
(greyscale, palette, RGBA, an EXIF-rotated JPEG, a duplicate).  `trained_checkpoint`
trains tiny-vit for a few hundred steps to match each shape image with its caption
("a red circle"), writes it as a clip_jax file and caches it for the test process.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageDraw

import clip_jax
from clip_jax.models import CLIP

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")
CLASSES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("gif", "GIF"), ("bmp", "BMP"), ("JPEG", "JPEG"))
SIDES = (48, 64, 80, 96)


def draw(label: str, rng: np.random.Generator, size: tuple[int, int] | None = None) -> Image.Image:
    """One shape of `label` ("red circle") near the centre of a dark image."""
    colour, shape = label.split()
    if size is None:
        size = (int(rng.choice(SIDES)), int(rng.choice(SIDES[:3])))
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(20, 60, 3)))
    pen = ImageDraw.Draw(image)
    side = min(width, height)
    r = side * rng.uniform(0.4, 0.46)
    cx, cy = width / 2 + rng.uniform(-0.02, 0.02) * side, height / 2 + rng.uniform(-0.02, 0.02) * side
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def save(image: Image.Image, path: str, fmt: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    image.save(path, format=fmt, **options)
    return path


def shapes_folder(root: str, per_class: int = 20, seed: int = 0) -> dict[str, str]:
    """Writes per_class images of every class under root (in sub-folders, all formats);
    returns {relative path: class} of the shape images."""
    rng = np.random.default_rng(seed)
    labels = {}
    for c, label in enumerate(CLASSES):
        for i in range(per_class):
            ext, fmt = FORMATS[(c + i) % len(FORMATS)]
            relative = f"{label.split()[0]}/{i % 3}/{label.replace(' ', '_')}_{i:03d}.{ext}"
            save(draw(label, rng), os.path.join(root, relative), fmt)
            labels[relative] = label
    return labels


def odd_files(root: str) -> dict[str, str]:
    """Readable images in unusual modes; returns {relative path: description}."""
    rng = np.random.default_rng(1)
    written = {}
    base = draw("blue square", rng, (70, 50))
    save(base.convert("L"), os.path.join(root, "odd", "grey.png"), "PNG")
    save(base.convert("P", palette=Image.ADAPTIVE, colors=16), os.path.join(root, "odd", "palette.png"), "PNG")
    rgba = base.convert("RGBA")
    rgba.putalpha(200)
    save(rgba, os.path.join(root, "odd", "alpha.png"), "PNG")
    save(draw("yellow circle", rng, (300, 20)), os.path.join(root, "odd", "strip.jpg"), "JPEG")
    written.update({"odd/grey.png": "greyscale", "odd/palette.png": "palette", "odd/alpha.png": "RGBA",
                    "odd/strip.jpg": "15:1 strip"})
    return written


def exif_rotated(path: str, upright: Image.Image) -> str:
    """A JPEG whose pixels are `upright` turned 90 degrees, with EXIF orientation 6 saying how to
    show it upright (as a phone camera writes it)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer rotates 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def corrupt_files(root: str, source: str) -> dict[str, str]:
    """Unreadable files with image names; returns {relative path: what it is}."""
    os.makedirs(os.path.join(root, "broken"), exist_ok=True)
    open(os.path.join(root, "broken", "empty.jpg"), "wb").close()
    with open(source, "rb") as f:
        data = f.read()
    with open(os.path.join(root, "broken", "truncated.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(root, "broken", "text.jpg"), "wb") as f:
        f.write(b"these bytes are not an image, whatever the name says\n" * 20)
    return {"broken/empty.jpg": "zero bytes", "broken/truncated.jpg": "truncated JPEG",
            "broken/text.jpg": "text with a .jpg name"}


# -- the tiny model -----------------------------------------------------------------------------

_TRAINED: dict[str, str] = {}


def _train(steps: int, batch: int, seed: int):
    """Contrastive training of image features against the 12 class captions.  The token
    embedding stays frozen (only 12 captions' tokens matter): a cheaper step."""
    model = clip_jax.create_model("tiny-vit")
    variables = clip_jax.init_variables(model, seed=seed)
    tokens = clip_jax.tokenize([f"a {label}" for label in CLASSES])[:, :16]
    groups = jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if "token_embedding" in jax.tree_util.keystr(path) else "trained", variables["params"])
    optimizer = optax.multi_transform(
        {"trained": optax.adam(optax.warmup_cosine_decay_schedule(0.0, 2e-3, 30, steps)),
         "frozen": optax.set_to_zero()}, groups)

    def loss_fn(params, images, labels):
        image = model.apply({"params": params}, images, method=CLIP.encode_image)
        text = model.apply({"params": params}, tokens, method=CLIP.encode_text)
        image = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
        text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
        return optax.softmax_cross_entropy_with_integer_labels(20.0 * image @ text.T, labels).mean()

    @jax.jit
    def step(params, state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(seed)
    pool_labels = np.arange(100 * len(CLASSES)) % len(CLASSES)
    pool = clip_jax.preprocess_batch([draw(CLASSES[i], rng) for i in pool_labels], model.config.vision.image_size)
    params = variables["params"]
    state = optimizer.init(params)
    for _ in range(steps):
        pick = rng.integers(0, len(pool), batch)
        params, state, _ = step(params, state, pool[pick], pool_labels[pick])
    return model, {"params": jax.tree.map(np.asarray, params)}


def trained_checkpoint(steps: int = 250, batch: int = 64, seed: int = 0) -> str:
    """Path of a tiny-vit clip_jax checkpoint trained to match CLASSES' images and captions
    (trained once per test process)."""
    key = f"{steps}-{batch}-{seed}"
    if key not in _TRAINED:
        start = time.time()
        model, variables = _train(steps, batch, seed)
        folder = tempfile.mkdtemp(prefix="clip_jax_search_model_")
        atexit.register(shutil.rmtree, folder, True)
        _TRAINED[key] = clip_jax.export_checkpoint(model, variables, os.path.join(folder, "shapes.safetensors"),
                                                   "clip_jax")
        print(f"trained the shapes model in {time.time() - start:.1f}s")
    return _TRAINED[key]


def random_checkpoint(folder: str, seed: int) -> str:
    """An untrained tiny-vit (another model than the trained one)."""
    model = clip_jax.create_model("tiny-vit")
    return clip_jax.export_checkpoint(model, clip_jax.init_variables(model, seed=seed),
                                      os.path.join(folder, f"random{seed}.safetensors"), "clip_jax")
