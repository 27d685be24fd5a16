"""A zero-shot classification demo that needs no download.

    python -m clip_jax.demo [--model tiny-vit] [--checkpoint PATH]

Without --checkpoint it initialises the named model (random weights: the predictions
are chance level), writes it as an open_clip checkpoint and reads it back through
`load_checkpoint`, so the whole public API runs end to end.  Give it a real checkpoint
(OpenAI .pt, open_clip file, Hugging Face folder) for meaningful predictions.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

import clip_jax
from clip_jax.evaluation.zeroshot import classifier_weights

CLASSES = ["red circle", "green square", "blue triangle"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a white background."]


def synthetic_images() -> list[Image.Image]:
    shapes = []
    for colour, kind in (("red", "circle"), ("green", "square"), ("blue", "triangle")):
        image = Image.new("RGB", (160, 120), "white")
        draw = ImageDraw.Draw(image)
        box = (40, 20, 120, 100)
        if kind == "circle":
            draw.ellipse(box, fill=colour)
        elif kind == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(80, 20), (40, 100), (120, 100)], fill=colour)
        shapes.append(image)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-vit", choices=clip_jax.available_models())
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    start = time.time()
    if args.checkpoint:
        model, variables = clip_jax.load_checkpoint(args.checkpoint)
        source = args.checkpoint
    else:
        fresh = clip_jax.create_model(args.model)
        with tempfile.TemporaryDirectory() as folder:
            path = clip_jax.export_checkpoint(fresh, clip_jax.init_variables(fresh),
                                              os.path.join(folder, "model.safetensors"), "open_clip")
            model, variables = clip_jax.load_checkpoint(path, name=args.model)
        source = f"{args.model} with random weights (chance-level predictions)"
    size = model.config.vision.image_size
    images = clip_jax.preprocess_batch(synthetic_images(), size)
    image_features = clip_jax.encode_image(model, variables, images)
    image_features = image_features / jnp.linalg.norm(image_features, axis=-1, keepdims=True)
    scale = float(np.exp(np.minimum(variables["params"]["logit_scale"], np.log(100.0))))
    logits = scale * image_features @ classifier_weights(model, variables, CLASSES, TEMPLATES)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    print(f"zero-shot with {source}, {len(TEMPLATES)} prompt templates per class")
    print(f"{'image':<16}" + "".join(f"{c:>16}" for c in CLASSES))
    for truth, row in zip(CLASSES, probs):
        print(f"{truth:<16}" + "".join(f"{p:>16.3f}" for p in row))
    accuracy = float(np.mean(np.argmax(probs, axis=1) == np.arange(len(CLASSES))))
    print(f"top-1 accuracy {accuracy:.2f} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
