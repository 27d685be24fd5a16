"""Model FLOPs counted from the jaxpr, for MFU.

XLA's cost analysis counts the body of a while loop once, so it under-counts a model
whose blocks run under `nn.scan` by the number of layers (12x for ViT-B/32).  Here the
traced program is walked instead: every matmul and convolution is counted, and a scan
body is multiplied by its length.  MFU uses model FLOPs in the usual sense: a train
step is three forward passes (forward, and twice that for the backward), whatever is
rematerialised; element-wise work is not counted.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp


def matmul_flops(fn: Callable, *args: Any, **kwargs: Any) -> int:
    """FLOPs (2 per multiply-add) of the matmuls and convolutions `fn` runs on `args`
    (arrays or jax.ShapeDtypeStruct; nothing is computed)."""
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _count(closed.jaxpr)


def _count(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":  # one branch runs: count the dearest
            total += max(_count(branch.jaxpr) for branch in eqn.params["branches"])
            continue
        repeats = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in _sub_jaxprs(eqn.params):
            total += repeats * _count(sub)
    return total


def _sub_jaxprs(params: dict):
    # The parameter holding an inner program is named differently per primitive
    # (scan/pjit/remat/shard_map: 'jaxpr'; custom_jvp/vjp: 'call_jaxpr'; while:
    # 'body_jaxpr', counted once since its trip count is unknown).
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr", "body_jaxpr"):
        inner = params.get(key)
        if inner is None:
            continue
        yield getattr(inner, "jaxpr", inner)


def _dot_flops(eqn) -> int:
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    return 2 * math.prod(out_shape) * math.prod(lhs_shape[d] for d in contracting)


def _conv_flops(eqn) -> int:
    rhs_shape = eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    # Each output element takes (in_features / groups) x kernel window multiply-adds.
    return 2 * math.prod(out_shape) * math.prod(rhs_shape) // rhs_shape[out_feature_dim]


def _abstract_inputs(model, batch_size: int, text_length: int | None = None):
    """Shape-only images and tokens for `model`."""
    size = model.config.vision.image_size
    images = jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((batch_size, text_length or model.config.text.context_length), jnp.int32)
    return images, tokens


def _abstract_variables(model):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), *_abstract_inputs(model, 1))


def model_forward_flops(model, batch_size: int, train: bool = True, text_length: int | None = None) -> int:
    """Forward FLOPs of both towers of a CLIP model on `batch_size` pairs (with the
    model's patch dropout when train=True) and texts of `text_length` positions
    (default: the full context)."""

    def forward(variables, images, tokens):
        return model.apply(variables, images, tokens, train=train,
                           rngs={"patch_dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])

    return matmul_flops(forward, _abstract_variables(model), *_abstract_inputs(model, batch_size, text_length))


def tower_forward_flops(model, batch_size: int, tower: str, text_length: int | None = None) -> int:
    """Inference FLOPs of one tower ("image" or "text") on `batch_size` inputs."""
    images, tokens = _abstract_inputs(model, batch_size, text_length)
    if tower == "image":
        return matmul_flops(lambda v, x: model.apply(v, x, method="encode_image"), _abstract_variables(model), images)
    if tower == "text":
        return matmul_flops(lambda v, t: model.apply(v, t, method="encode_text"), _abstract_variables(model), tokens)
    raise ValueError(f"tower {tower!r} unknown; valid: 'image', 'text'")


def train_step_flops(model, batch_size: int, text_length: int | None = None) -> int:
    """Model FLOPs of one train step on a global batch: 3x the forward pass."""
    return 3 * model_forward_flops(model, batch_size, train=True, text_length=text_length)
