"""Where read weights go: each leaf straight onto its sharding as the reader builds it
(`state_dict_to_variables(..., place=)`), so a model is never whole on the host twice and
never copied whole to every device.  A device receives only its slice
(`jax.make_array_from_callback`), and on several hosts each host places only its
devices' slices.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from clip_jax.convert.table import abstract_variables
from clip_jax.models import CLIPConfig
from clip_jax.sharding import DEFAULT_RULES, tree_shardings


def _lookup(tree: Mapping, path: tuple) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def put_on(shardings: Mapping) -> Callable[[tuple, np.ndarray], jax.Array]:
    """(path, host array) -> a global array on `shardings`' leaf at that path (a tree shaped
    like the variables: {'params': ..., 'batch_stats': ...})."""
    def put(path: tuple, value: np.ndarray) -> jax.Array:
        sharding = _lookup(shardings, path)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: np.asarray(value[index]))
    return put


def variable_shardings(config: CLIPConfig, mesh: jax.sharding.Mesh,
                       rules: Sequence[tuple[str, str]] = DEFAULT_RULES) -> dict:
    """The trainer's sharding of each variable of `config`'s model on `mesh` (FSDP over
    the mesh's fsdp axis, by the rules)."""
    return tree_shardings(abstract_variables(config), mesh, rules)


def on_mesh(mesh: jax.sharding.Mesh, rules: Sequence[tuple[str, str]] = DEFAULT_RULES):
    """A reader's `place`: every leaf on `mesh`, sharded as the trainer shards it."""
    return lambda config: put_on(variable_shardings(config, mesh, rules))


def place_tree(tree: Mapping, put: Callable[[tuple, np.ndarray], Any] | None, path: tuple = ()) -> dict:
    """A nested dict of host arrays, each leaf through `put` (or copied to memory of its
    own, when there is none: a leaf may be a view of a mapped file)."""
    out = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            out[name] = place_tree(value, put, path + (name,))
        else:
            out[name] = put(path + (name,), value) if put is not None else np.array(value)
    return out
