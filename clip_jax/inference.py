"""Jitted feature extraction with input checks that name the expected layout."""
from __future__ import annotations

import functools

import jax
import numpy as np

from clip_jax.models import CLIP
from clip_jax.models.text import trim_for


@functools.lru_cache(maxsize=64)
def _jitted(model: CLIP, method: str, project: bool = True):
    if method == "image":
        return jax.jit(lambda v, x: model.apply(v, x, project=project, method=CLIP.encode_image))
    return jax.jit(lambda v, t: model.apply(v, t, method=CLIP.encode_text))


def check_images(model: CLIP, images) -> None:
    size = model.config.vision.image_size
    shape = tuple(np.shape(images))
    expected = f"NHWC float images [batch, {size}, {size}, 3], normalised with CLIP's mean and std"
    if len(shape) != 4:
        raise ValueError(f"images have rank {len(shape)} (shape {shape}); expected {expected}")
    if shape[1:] != (size, size, 3):
        hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))" if shape[1] == 3 else ""
        raise ValueError(f"images have shape {shape}; expected {expected}{hint}")
    dtype = np.dtype(getattr(images, "dtype", np.float32))
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise ValueError(f"images have dtype {dtype}; expected {expected} (run clip_jax.preprocess first)")


def check_tokens(model: CLIP, tokens) -> None:
    limit = model.config.text.context_length
    shape = tuple(np.shape(tokens))
    dtype = np.dtype(getattr(tokens, "dtype", np.int32))
    if model.config.family == "siglip":
        if len(shape) != 2 or shape[1] != limit or not np.issubdtype(dtype, np.integer):
            raise ValueError(
                f"tokens have shape {shape} and dtype {dtype}; expected integer ids [batch, {limit}] padded to the "
                f"full {limit} positions, as SigLIP was trained: use clip_jax.load_tokenizer(model, PATH)"
            )
    elif len(shape) != 2 or shape[1] > limit or not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"tokens have shape {shape} and dtype {dtype}; expected integer ids [batch, {limit}] "
            "from clip_jax.tokenize"
        )


def encode_image(model: CLIP, variables, images, project: bool = True) -> jax.Array:
    """Unnormalised image features [N, embed_dim] (or pre-projection with project=False)."""
    check_images(model, images)
    return _jitted(model, "image", project)(variables, images)


def encode_text(model: CLIP, variables, tokens, trim: bool = True) -> jax.Array:
    """Unnormalised text features [N, embed_dim] of int token ids [N, <=77] (SigLIP:
    exactly [N, context_length]).

    For CLIP, host (NumPy) tokens are cut after the batch's last EOT first
    (`trim_after_eot`): the same features, computed on fewer positions.  Device arrays
    are used as given."""
    check_tokens(model, tokens)
    if trim and isinstance(tokens, (np.ndarray, list)):
        tokens = trim_for(model.config, np.asarray(tokens))
    return _jitted(model, "text")(variables, tokens)


def init_variables(model: CLIP, seed: int = 0) -> dict:
    """Freshly initialised variables (OpenAI's initialisation for CLIP) for `model`."""
    size = model.config.vision.image_size
    images = np.zeros((1, size, size, 3), np.float32)
    tokens = np.zeros((1, model.config.text.context_length), np.int32)
    # The 'rbg' generator compiles faster than threefry for a model's many independent
    # initialisers, with init randomness of the same quality.
    return jax.jit(model.init)(jax.random.key(seed, impl="rbg"), images, tokens)
