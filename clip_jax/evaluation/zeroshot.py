"""Zero-shot classification with prompt ensembling, as in the paper's notebook.

Each class's prompts (templates filled with its name) are encoded, L2-normalised,
averaged and renormalised: the ensemble lives in embedding space.  Images are scored
by cosine similarity against these class embeddings; top-1, top-5 and mean per-class
recall are reported (clip_jax.evaluation.metrics).  Probabilities follow the model's
scoring rule (`zero_shot_probabilities`, clip_jax.models.scoring): a softmax over the
classes, or an independent sigmoid(scale * cos + bias) per class for models trained with
the sigmoid loss; both rank classes as the cosine does.

Prompts are tokenised with the model's tokenizer (clip_jax.tokenizers: CLIP's BPE, or a
SigLIP model's SentencePiece file, which callers pass).  A model's default template is
its family's, the one its authors use: CLIP's "a photo of a {}.", SigLIP's "This is a
photo of {}." (the SigLIP and SigLIP 2 model cards, transformers' zero-shot pipeline).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clip_jax import tokenizers
from clip_jax.evaluation import features as features_lib
from clip_jax.evaluation.metrics import classification_metrics
from clip_jax.evaluation.prompts import check_templates, fill
from clip_jax.evaluation.scores import normalise, scores_with_exact_ties, unique_rows
from clip_jax.inference import encode_text
from clip_jax.models import FAMILIES, family_of

__all__ = ["DEFAULT_TEMPLATES", "check_templates", "classifier_weights", "default_templates", "ensemble",
           "zero_shot_probabilities", "zero_shot_scores", "zero_shot_accuracy"]

DEFAULT_TEMPLATES = {name: family.default_template for name, family in FAMILIES.items()}  # a view, by family


def default_templates(config) -> list[str]:
    """The one-template default of a model's family (module docstring)."""
    return [family_of(config).default_template]


def classifier_weights(model, variables, class_names: Sequence, templates: Sequence[str],
                       batch_size: int = 256, tokenizer=None) -> jnp.ndarray:
    """[embed_dim, num_classes] ensembled, normalised class embeddings.

    A class is a name, or a list of names (synonyms, as OpenAI's FER2013 classes): its
    embedding then averages the prompts of every name with every template.  tokenizer:
    None (the model's own: CLIP's BPE), a callable, a spec ("siglip:PATH") or the path
    of a SigLIP model's SentencePiece file or folder (clip_jax.tokenizers.resolve)."""
    encode = tokenizers.resolve(model, tokenizer)
    check_templates(templates)
    if not len(class_names):
        raise ValueError("no class names given")
    keys = [(name,) if isinstance(name, str) else tuple(name) for name in class_names]
    distinct = list(dict.fromkeys(keys))
    if len(distinct) < len(keys):
        # A class listed twice (OpenAI's ImageNet names have 'missile' and 'sunglasses'
        # twice) gets a copy of the first one's weights: an exact tie, decided by index.
        weights = classifier_weights(model, variables, [list(k) for k in distinct], templates, batch_size,
                                     tokenizer=encode)
        position = {k: i for i, k in enumerate(distinct)}
        return weights[:, np.array([position[k] for k in keys])]
    synonyms = [list(k) for k in keys]
    prompts = [fill(t, name) for names in synonyms for name in names for t in templates]
    owner = np.repeat(np.arange(len(synonyms)), [len(names) * len(templates) for names in synonyms])
    # Trimmed once for all prompts (the same on every host): one compiled shape.
    tokens = family_of(model).trim_text(encode(prompts))
    features = []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size]
        # Pad the last chunk to the full size: one compilation for every class count.
        padded = np.zeros((batch_size,) + chunk.shape[1:], chunk.dtype)
        padded[: len(chunk)] = chunk
        features.append(encode_text(model, variables, padded)[: len(chunk)])
    features = jnp.concatenate(features)
    if all(len(names) == 1 for names in synonyms):
        return ensemble(features.reshape(len(synonyms), len(templates), -1))
    # Mean of the normalised prompt features of each class, renormalised (as `ensemble`).
    sums = jax.ops.segment_sum(normalise(features), jnp.asarray(owner), num_segments=len(synonyms))
    return normalise(sums / jnp.bincount(jnp.asarray(owner), length=len(synonyms))[:, None]).T


def ensemble(text_features) -> jnp.ndarray:
    """[num_classes, num_templates, E] prompt features -> [E, num_classes] class weights:
    normalise each, average over templates, renormalise."""
    return normalise(normalise(jnp.asarray(text_features)).mean(axis=1)).T


def zero_shot_scores(image_features, weights) -> np.ndarray:
    """Cosine similarities [N, num_classes] of (unnormalised) image features and class
    weights; equal class weights give exactly equal scores (clip_jax.evaluation.scores)."""
    classes, class_of = unique_rows(np.asarray(weights).T)
    return np.asarray(scores_with_exact_ties(normalise(jnp.asarray(image_features)), jnp.asarray(classes), class_of))


def zero_shot_probabilities(model, variables, image_features, weights) -> np.ndarray:
    """[N, num_classes] class probabilities by the model's scoring rule: sigmoid(scale *
    cos + bias), each class on its own, or a softmax of scale * cos over the classes (the
    scale capped at 100, as in training)."""
    cosine = zero_shot_scores(image_features, weights)
    return np.asarray(model.scoring_rule.probabilities(cosine, variables["params"]))


def zero_shot_accuracy(model, variables, batches: Iterable[Mapping[str, np.ndarray]], weights,
                       num_classes: int | None = None) -> dict:
    """top1, top5 (%, with at least 5 classes), mean per-class recall (%) and the example count.

    batches: dicts with "images" [B, H, W, 3], "labels" int [B] and "mask" bool [B]
    (False on padding rows)."""
    batches = ({"mask": np.ones(len(b["labels"]), bool), **b} for b in batches)
    feats = features_lib.extract(model, variables, batches)
    return classification_metrics(zero_shot_scores(feats.images, weights), feats.labels,
                                  num_classes or weights.shape[1])
