"""LoRA (Hu et al. 2021): low-rank adapters on chosen weight matrices, the rest frozen.

A targeted kernel W [in, out] (or a stack [layers, in, out] of scanned blocks) is used
as W + (alpha / rank) * A @ B with A [.., in, rank] and B [.., rank, out].  B starts at
zero, so step 0 is the base model exactly; A starts uniform in +-1/sqrt(in) (as PEFT's
Kaiming-uniform).  Only A and B (and a classification head, if any) are differentiated,
updated and given optimizer state; the base weights never change.  The low-rank
product is added to the weight inside the jitted step (rank x in x out multiply-adds
per matrix, small beside the batch's matmuls), and `merge` folds it in for good: a
training workdir read back (clip_jax.load_checkpoint) is plain, merged weights.

The adapters live in the training state as params["lora"], a tree mirroring the
targeted paths: params["lora"]["visual"]["transformer"]["blocks"]["attn"]["out_proj"]
["kernel"] = {"a": A, "b": B}.  Targets are regexes over '/'-joined parameter paths
("visual/transformer/blocks/attn/out_proj/kernel"); each must match at least one matrix.
"""
from __future__ import annotations

import difflib
import re
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clip_jax.sharding import path_string

ADAPTERS = "lora"


def target_paths(params, patterns: Sequence[str]) -> list[str]:
    """The '/'-joined paths of the kernels `patterns` select; an error names a pattern
    that matches nothing (with the closest parameter paths) or a leaf that is not a
    matrix or a stack of matrices."""
    paths = {path_string(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    chosen = []
    for pattern in patterns:
        regex = re.compile(pattern)
        matched = [p for p in paths if regex.search(p)]
        if not matched:
            close = difflib.get_close_matches(pattern.strip("^$"), list(paths), n=5, cutoff=0.3) or sorted(paths)[:5]
            raise ValueError(f"lora target {pattern!r} matches no parameter; close parameter paths: {close}")
        for path in matched:
            if paths[path].ndim not in (2, 3) or not path.endswith("kernel"):
                raise ValueError(f"lora target {pattern!r} matches {path} of shape {tuple(paths[path].shape)}: "
                                 "adapters go on dense kernels ([in, out], or [layers, in, out] in scanned blocks)")
        chosen.extend(p for p in matched if p not in chosen)
    return chosen


def _get(tree, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def abstract_adapters(params, patterns: Sequence[str], rank: int) -> dict:
    out: dict = {}
    for path in target_paths(params, patterns):
        kernel = _get(params, path)
        *layers, fan_in, fan_out = kernel.shape
        _set(out, path, {"a": jax.ShapeDtypeStruct((*layers, fan_in, rank), jnp.float32),
                         "b": jax.ShapeDtypeStruct((*layers, rank, fan_out), jnp.float32)})
    return out


def init_adapters(rng, abstract: Mapping) -> dict:
    """A uniform in +-1/sqrt(in), B zero (the adapted model starts as the base model)."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(abstract)
    keys = jax.random.split(rng, len(leaves))
    values = []
    for key, (path, leaf) in zip(keys, leaves):
        if path_string(path).endswith("/b"):
            values.append(jnp.zeros(leaf.shape, leaf.dtype))
        else:
            bound = 1.0 / np.sqrt(leaf.shape[-2])
            values.append(jax.random.uniform(key, leaf.shape, leaf.dtype, -bound, bound))
    return jax.tree_util.tree_unflatten(tree, values)


def adapter_paths(adapters: Mapping) -> list[str]:
    return sorted({path_string(p).rsplit("/", 1)[0] for p, _ in jax.tree_util.tree_flatten_with_path(adapters)[0]})


def merge(params: Mapping, adapters: Mapping, scale: float, xp=jnp) -> dict:
    """`params` (without the adapters) with W + scale * A @ B at every adapted kernel,
    computed in float32 and cast to W's dtype.  xp=np merges host arrays in NumPy."""
    out = jax.tree.map(lambda x: x, dict(params))  # a new tree; leaves shared
    for path in adapter_paths(adapters):
        pair = _get(adapters, path)
        kernel = _get(params, path)
        delta = xp.matmul(xp.asarray(pair["a"], xp.float32), xp.asarray(pair["b"], xp.float32))
        _set(out, path, (xp.asarray(kernel, xp.float32) + scale * delta).astype(kernel.dtype))
    return out


def folded(params: Mapping, scale: float, xp=jnp) -> dict:
    """`params` as plain weights: a tree's adapters (params["lora"], if any) merged into
    the kernels they adapt, and removed."""
    if ADAPTERS not in params:
        return dict(params)
    rest = {k: v for k, v in params.items() if k != ADAPTERS}
    return merge(rest, params[ADAPTERS], scale, xp=xp)


def scale_of(alpha: float, rank: int) -> float:
    return float(alpha) / int(rank)


def frozen_patterns(params, keep: Sequence[str] = ()) -> tuple[str, ...]:
    """optim.frozen regexes for every top-level parameter but the adapters (and `keep`)."""
    return tuple(f"^{name}(/|$)" for name in params if name != ADAPTERS and name not in keep)


def count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
