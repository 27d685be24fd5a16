"""A zero-shot classification demo that needs no download.

    python -m clip_jax.zero_shot_demo [--model tiny-vit] [--checkpoint PATH]

Without --checkpoint it initialises the named CLIP model (random weights: the
predictions are chance level), writes it as an open_clip checkpoint and reads it back
through `load_checkpoint`, so the whole public API runs end to end.  Give it a real
checkpoint (OpenAI .pt, open_clip file, Hugging Face CLIP or SigLIP folder,
hf-hub:ORG/NAME, or a pretrained NAME:TAG such as ViT-B-32:openai) for meaningful
predictions; a SigLIP model's tokenizer is read from its folder (or --tokenizer
FILE_OR_FOLDER), and its probabilities are its own sigmoid scores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

import clip_jax
from clip_jax.evaluation.zeroshot import classifier_weights, zero_shot_probabilities

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
    parser.add_argument("--checkpoint", default=None,
                        help="a file or folder, hf-hub:ORG/NAME, or a pretrained NAME:TAG")
    parser.add_argument("--tokenizer", default=None, help="a SigLIP model's SentencePiece file or folder "
                        "(default: the checkpoint's folder)")
    args = parser.parse_args()
    start = time.time()
    if args.checkpoint:
        model, variables = clip_jax.load_checkpoint(args.checkpoint)
        source = args.checkpoint
    elif clip_jax.get_config(args.model).text.tokenizer != "bpe":
        parser.error(f"{args.model} needs its SentencePiece tokenizer: pass --checkpoint (a SigLIP folder)")
    else:
        fresh = clip_jax.create_model(args.model)
        with tempfile.TemporaryDirectory() as folder:
            path = clip_jax.export_checkpoint(fresh, clip_jax.init_variables(fresh),
                                              os.path.join(folder, "model.safetensors"), "open_clip")
            model, variables = clip_jax.load_checkpoint(path, name=args.model)
        source = f"{args.model} with random weights (chance-level predictions)"
    tokenizer = clip_jax.tokenizers.for_checkpoint(model, args.checkpoint, args.tokenizer)
    size = model.config.vision.image_size
    images = clip_jax.preprocess_batch(synthetic_images(), size, family=model.config.family)
    image_features = clip_jax.encode_image(model, variables, images)
    weights = classifier_weights(model, variables, CLASSES, TEMPLATES, tokenizer=tokenizer)
    probs = zero_shot_probabilities(model, variables, image_features, weights)
    print(f"zero-shot with {source}, {len(TEMPLATES)} prompt templates per class")
    print(f"{'image':<16}" + "".join(f"{c:>16}" for c in CLASSES))
    for truth, row in zip(CLASSES, probs):
        print(f"{truth:<16}" + "".join(f"{p:>16.3f}" for p in row))
    accuracy = float(np.mean(np.argmax(probs, axis=1) == np.arange(len(CLASSES))))
    print(f"top-1 accuracy {accuracy:.2f} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
