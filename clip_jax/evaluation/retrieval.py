"""Zero-shot image-text retrieval: recall@k in both directions.

Every caption is a query for text->image retrieval (a hit when its image is among the k
most similar images); every image is a query for image->text retrieval (a hit when any
of its captions is among the k most similar captions), as in CLIP-like papers and
CLIP_benchmark.  Similarities are cosine; percent.  Images without captions are still
candidates for text->image but are not image->text queries.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _normalise(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@jax.jit
def _ranks_t2i(queries, images, positive):
    # Rank of each caption's image: how many images score strictly higher.
    scores = queries @ images.T
    pos = jnp.take_along_axis(scores, positive[:, None], axis=1)
    return jnp.sum(scores > pos, axis=1)


@jax.jit
def _ranks_i2t(queries, query_ids, texts, text_image):
    # A positive is in the top k exactly when fewer than k captions beat the best positive.
    scores = queries @ texts.T
    is_pos = text_image[None, :] == query_ids[:, None]
    best = jnp.max(jnp.where(is_pos, scores, -jnp.inf), axis=1, keepdims=True)
    return jnp.sum(scores > best, axis=1)


def retrieval_metrics(image_features, text_features, text_image, ks: Sequence[int] = (1, 5, 10),
                      chunk: int = 1024) -> dict:
    """image_to_text_recall@k and text_to_image_recall@k (%) from features of N images,
    M captions and text_image [M], the image index of each caption."""
    images = _normalise(jnp.asarray(image_features, jnp.float32))
    texts = _normalise(jnp.asarray(text_features, jnp.float32))
    text_image = np.asarray(text_image, np.int32)
    if len(texts) != len(text_image):
        raise ValueError(f"{len(texts)} caption features but {len(text_image)} caption-image indices")
    if not len(texts):
        raise ValueError("no captions: retrieval needs a dataset with captions")
    ranks_t2i = np.concatenate([np.asarray(_ranks_t2i(texts[s : s + chunk], images, text_image[s : s + chunk]))
                                for s in range(0, len(texts), chunk)])
    queries = np.unique(text_image)  # images with at least one caption
    ranks_i2t = np.concatenate([np.asarray(_ranks_i2t(images[queries[s : s + chunk]], queries[s : s + chunk],
                                                      texts, text_image))
                                for s in range(0, len(queries), chunk)])
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_recall@{k}"] = 100.0 * float(np.mean(ranks_i2t < k))
        metrics[f"text_to_image_recall@{k}"] = 100.0 * float(np.mean(ranks_t2i < k))
    metrics["images"], metrics["captions"] = int(len(images)), int(len(texts))
    return metrics


def flatten_captions(text_features: np.ndarray, text_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, C, E] + [N, C] mask -> [M, E] caption features and [M] image index of each."""
    image_index = np.nonzero(text_mask)[0].astype(np.int32)
    return text_features[text_mask], image_index
