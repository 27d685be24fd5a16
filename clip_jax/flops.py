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


def model_forward_flops(model, batch_size: int, train: bool = True, text_length: int | None = None) -> int:
    """Forward FLOPs of both towers of a CLIP model on `batch_size` pairs (with the
    model's patch dropout when train=True) and texts of `text_length` positions
    (default: the full context)."""
    size = model.config.vision.image_size
    images = jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((batch_size, text_length or model.config.text.context_length), jnp.int32)
    one_image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    one_text = jax.ShapeDtypeStruct((1, model.config.text.context_length), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), one_image, one_text)

    def forward(variables, images, tokens):
        return model.apply(variables, images, tokens, train=train,
                           rngs={"patch_dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])

    return matmul_flops(forward, variables, images, tokens)


def train_step_flops(model, batch_size: int, text_length: int | None = None) -> int:
    """Model FLOPs of one train step on a global batch: 3x the forward pass."""
    return 3 * model_forward_flops(model, batch_size, train=True, text_length=text_length)
