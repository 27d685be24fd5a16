"""Zero-shot image-text retrieval: recall@k in both directions.

Every caption is a query for text->image retrieval (a hit when its image is among the k
most similar images); every image is a query for image->text retrieval (a hit when any
of its captions is among the k most similar captions), as in CLIP-like papers and
CLIP_benchmark.  Similarities are cosine; percent.  Images without captions are still
candidates for text->image but are not image->text queries (CLIP_benchmark counts them
as misses, so its image->text figure is ours times captioned/all images).

Ties.  Real collections hold exact duplicates (one boilerplate caption on many images,
re-uploaded images), so equal scores are common.  They are broken as a stable sort by
candidate index breaks them: the rank of candidate p among scores s is

    #{j : s_j > s_p} + #{j < p : s_j == s_p},

so of tied candidates the one that comes first in the dataset ranks first.  For an image
with several captions the query's rank is that of its first positive in this order: the
caption with the highest score and, among equal highest, the lowest index.  Counting
only strictly higher scores would let every tied candidate share the top rank (the
boilerplate caption would be "retrieved" for all its images at once).  Equal features
score exactly equal here (scores.py), so rounding never decides a tie.

CLIP_benchmark ranks with `torch.topk`, whose order among ties is unspecified: on a CPU
(torch 2.14) `topk(k=1)` of an all-equal row of 8 scores returns index 6; rows of thousands mostly
keep the lowest indices, but not always.  Without ties the two agree exactly; with ties
they agree when CLIP_benchmark's top-k is made stable, and as shipped differ by at most
the queries sitting on ties (tests/parity/test_realistic_eval.py).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clip_jax.evaluation.scores import normalise, scores_with_exact_ties, unique_rows


def _stable_rank(scores, target):
    """Rank of candidate `target` [Q] in each row of scores [Q, N] under the stable rule:
    the candidates scoring higher, plus the equal ones of lower index."""
    value = jnp.take_along_axis(scores, target[:, None], axis=1)
    earlier = jnp.arange(scores.shape[1])[None, :] < target[:, None]
    return jnp.sum((scores > value) | ((scores == value) & earlier), axis=1)


@jax.jit
def _ranks_t2i(queries, images, image_of, positive):
    return _stable_rank(scores_with_exact_ties(queries, images, image_of), positive)


@jax.jit
def _ranks_i2t(queries, query_ids, texts, text_of, text_image):
    # A positive is in the top k exactly when the first positive in stable order is.
    scores = scores_with_exact_ties(queries, texts, text_of)
    is_pos = text_image[None, :] == query_ids[:, None]
    first = jnp.argmax(jnp.where(is_pos, scores, -jnp.inf), axis=1)  # best positive; of equal ones the first
    return _stable_rank(scores, first)


def retrieval_metrics(image_features, text_features, text_image, ks: Sequence[int] = (1, 5, 10),
                      chunk: int = 1024) -> dict:
    """image_to_text_recall@k and text_to_image_recall@k (%) from features of N images,
    M captions and text_image [M], the image index of each caption."""
    text_image = np.asarray(text_image, np.int32)
    if len(text_features) != len(text_image):
        raise ValueError(f"{len(text_features)} caption features but {len(text_image)} caption-image indices")
    if not len(text_image):
        raise ValueError("no captions: retrieval needs a dataset with captions")
    # Duplicates are scored once (scores.py): equal features tie exactly.
    images, image_of = unique_rows(image_features)
    texts, text_of = unique_rows(text_features)
    images, texts = normalise(jnp.asarray(images)), normalise(jnp.asarray(texts))
    ranks_t2i = np.concatenate([np.asarray(_ranks_t2i(texts[text_of[s : s + chunk]], images, image_of,
                                                      text_image[s : s + chunk]))
                                for s in range(0, len(text_image), chunk)])
    queries = np.unique(text_image)  # images with at least one caption
    ranks_i2t = np.concatenate([np.asarray(_ranks_i2t(images[image_of[queries[s : s + chunk]]], queries[s : s + chunk],
                                                      texts, text_of, text_image))
                                for s in range(0, len(queries), chunk)])
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_recall@{k}"] = 100.0 * float(np.mean(ranks_i2t < k))
        metrics[f"text_to_image_recall@{k}"] = 100.0 * float(np.mean(ranks_t2i < k))
    metrics["images"], metrics["captions"] = int(len(image_of)), int(len(text_of))
    return metrics


def flatten_captions(text_features: np.ndarray, text_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, C, E] + [N, C] mask -> [M, E] caption features and [M] image index of each."""
    image_index = np.nonzero(text_mask)[0].astype(np.int32)
    return text_features[text_mask], image_index
