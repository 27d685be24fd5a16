"""Jitted feature extraction.  The input contracts (shapes, dtypes, token layout) are
the model's own (clip_jax.models.model.check_images / check_tokens), checked as it traces."""
from __future__ import annotations

import functools

import jax
import numpy as np

from clip_jax.models import CLIP, family_of
from clip_jax.models.model import check_tokens, example_inputs


@functools.lru_cache(maxsize=64)
def _jitted(model: CLIP, method: str, project: bool = True):
    if method == "image":
        return jax.jit(lambda v, x: model.apply(v, x, project=project, method=CLIP.encode_image))
    return jax.jit(lambda v, t: model.apply(v, t, method=CLIP.encode_text))


def encode_image(model: CLIP, variables, images, project: bool = True) -> jax.Array:
    """Unnormalised image features [N, embed_dim] (or pre-projection with project=False)."""
    if isinstance(images, (list, tuple)):
        images = np.asarray(images)
    return _jitted(model, "image", project)(variables, images)


def encode_text(model: CLIP, variables, tokens, trim: bool = True) -> jax.Array:
    """Unnormalised text features [N, embed_dim] of int token ids [N, <=77] (SigLIP:
    exactly [N, context_length]).

    For CLIP, host (NumPy) tokens are cut after the batch's last EOT first
    (`trim_after_eot`): the same features, computed on fewer positions.  Device arrays
    are used as given."""
    if isinstance(tokens, (list, tuple)):
        tokens = np.asarray(tokens)
    if trim and isinstance(tokens, np.ndarray):
        check_tokens(model.config, tokens)  # before trimming shortens them
        tokens = family_of(model.config).trim_text(tokens)
    return _jitted(model, "text")(variables, tokens)


def init_variables(model: CLIP, seed: int = 0) -> dict:
    """Freshly initialised variables (OpenAI's initialisation for CLIP) for `model`."""
    # The 'rbg' generator compiles faster than threefry for a model's many independent
    # initialisers, with init randomness of the same quality.
    return jax.jit(model.init)(jax.random.key(seed, impl="rbg"), *example_inputs(model.config))
