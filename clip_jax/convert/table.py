"""Torch state dicts <-> clip_jax variables, by the rows a model's family names its
parameters with (`Family.state_dict_rows`, clip_jax/models/families/): one row per torch
key, naming the Flax collection and path it maps to, the layer index when the path is a
scanned (stacked) transformer parameter, and the layout change.  Import and export read
the same rows, so they cannot drift apart.  Nothing here knows any family.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

from clip_jax.models import CLIPConfig, create_model, family_of
from clip_jax.models.families.naming import contiguous, shapes_text
from clip_jax.models.model import example_inputs

# config -> (Flax path, host array) -> the array where it belongs (clip_jax/convert/placement.py)
Placement = Callable[[CLIPConfig], Callable[[tuple, np.ndarray], Any]]

# Keys OpenAI's archives and older open_clip files carry that are not parameters.
IGNORED_KEYS = re.compile(
    r"^(input_resolution|context_length|vocab_size|attn_mask|visual\.attn_mask|logit_bias_unused)$"
    r"|num_batches_tracked$|position_ids$"
)


def rows(config: CLIPConfig) -> list:
    """The full mapping table of an architecture, from its family."""
    return family_of(config).state_dict_rows(config)


def _to_flax(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return array.T
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    if layout == "scalar":
        return array.reshape(())
    return array


def _to_torch(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return array.T
    if layout == "conv":
        return array.transpose(3, 2, 0, 1)
    if layout == "scalar":
        return array.reshape((1,))
    return array


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
    for name in path:
        tree = tree[name]
    return tree


def normalize_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip DDP's 'module.' prefix and drop buffers that are not parameters."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if IGNORED_KEYS.search(key):
            continue
        out[key] = np.asarray(value)
    return out


@functools.lru_cache(maxsize=8)
def abstract_variables(config: CLIPConfig) -> dict:
    """The shapes and dtypes of an architecture's Flax variables (traced once per
    architecture: reading a checkpoint checks the shapes and places the leaves by them)."""
    return jax.eval_shape(create_model(config).init, jax.random.PRNGKey(0), *example_inputs(config))


def expected_shapes(config: CLIPConfig) -> dict[str, tuple[int, ...]]:
    """Torch-layout shape of every key of an architecture, derived from the model."""
    shapes = abstract_variables(config)
    out = {}
    for row in rows(config):
        shape = _get(shapes[row.collection], row.path).shape
        if row.layer is not None:
            shape = shape[1:]
        if row.layout == "linear":
            shape = shape[::-1]
        elif row.layout == "conv":
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif row.layout == "scalar":
            shape = (1,)
        out[row.key] = tuple(shape)
    return out


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], config: CLIPConfig, place: Placement | None = None,
                            ) -> dict:
    """Flax variables ({'params': ..., ['batch_stats': ...]}) of a torch state dict.

    place: for arrays on devices, `place(config)` gives a function (path, array) -> array
    that each leaf goes through as soon as it is built, so no second host copy of the
    model is ever whole (see placement.py).

    Raises ValueError listing missing and unexpected keys and shape mismatches, with
    shapes, when the tensors do not fit the architecture.
    """
    sd = normalize_state_dict(state_dict)
    table = rows(config)
    expected = expected_shapes(config)
    missing = [r.key for r in table if r.key not in sd]
    unexpected = sorted(set(sd) - set(expected))
    wrong = [k for k, shape in expected.items() if k in sd and tuple(sd[k].shape) != shape]
    if missing or unexpected or wrong:
        raise ValueError(
            "checkpoint does not fit the architecture "
            f"(embed_dim={config.embed_dim}, vision={config.vision}, text={config.text}):\n"
            f"  missing keys ({len(missing)}): {', '.join(f'{k} {expected[k]}' for k in missing[:40]) or 'none'}"
            f"{' ...' if len(missing) > 40 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {shapes_text(sd, unexpected[:40])}\n"
            f"  wrong shapes ({len(wrong)}): "
            + (", ".join(f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in wrong[:40]) or "none")
        )
    put = place(config) if place is not None else None
    leaves: dict[tuple, list] = {}  # each Flax leaf's rows, a stacked leaf's in layer order
    for row in table:
        leaves.setdefault((row.collection,) + row.path, []).append(row)
    variables: dict = {}
    for path, leaf_rows in leaves.items():
        values = [_to_flax(sd[row.key].astype(np.float32, copy=False), row.layout) for row in leaf_rows]
        # Copies: the values may be views of a memory-mapped file.
        value = np.stack(values) if leaf_rows[0].layer is not None else np.array(values[0])
        _set(variables, path, put(path, value) if put is not None else value)
    return variables


def variables_to_state_dict(variables: Mapping, config: CLIPConfig) -> dict[str, np.ndarray]:
    """A torch-layout state dict (OpenAI / open_clip names) of Flax variables."""
    sd = {}
    for row in rows(config):
        value = np.asarray(_get(variables[row.collection], row.path), dtype=np.float32)
        if row.layer is not None:
            value = value[row.layer]
        sd[row.key] = contiguous(_to_torch(value, row.layout))
        if row.key.endswith(".running_var"):
            sd[row.key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return sd


