"""Device mesh, parameter sharding rules, host-local <-> global arrays, and multi-host
start-up.

Conventions (as big_vision):
  * the mesh has named axes, by default `data` and `fsdp`; the batch is split over all
    of them, so FSDP devices also see different examples;
  * parameter (and optimizer-state) shardings come from an ordered list of
    (regex, rule) pairs matched against the '/'-joined path; the first match wins.
    Rules: "replicate", or "fsdp" (split the largest dimension divisible by the fsdp
    axis size, replicating tensors smaller than `min_fsdp_size` elements);
  * each host loads only its slice of the batch, which becomes one global array.
"""
from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
# The temperature and bias are scalars; everything else is split where it is large enough.
DEFAULT_RULES = (("logit_scale|logit_bias", "replicate"), (".*", "fsdp"))
RULES = ("replicate", "fsdp")
MIN_FSDP_SIZE = 2**14


def maybe_initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                                 process_id: int = -1, timeout_s: int = 300) -> None:
    """Join a multi-host runtime when one is asked for.

    Explicit coordinator flags win; otherwise a TPU pod slice or a SLURM job with more
    than one task starts `jax.distributed` from its environment; otherwise this is a
    single-process run and nothing happens.  A host that cannot join within `timeout_s`
    seconds (the coordinator is not up, or not reachable) fails with an error naming the
    address and the timeout.
    """
    if coordinator_address:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"with coordinator_address={coordinator_address!r}, num_processes must be >= 1 and "
                f"0 <= process_id < num_processes; got num_processes={num_processes}, process_id={process_id}"
            )
        where = f"coordinator {coordinator_address} as process {process_id} of {num_processes}"
        arguments = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ:
        where, arguments = "the coordinator found in the environment (SLURM / TPU)", {}
    else:
        return
    if timeout_s < 1:
        raise ValueError(f"the coordinator timeout must be at least 1 second; got {timeout_s}")
    hint = ("Check that process 0 runs with the same --coordinator_address, that its port is reachable from "
            "this host, and that every process has a different --process_id.")
    if coordinator_address and process_id != 0 and not _reachable(coordinator_address, timeout_s):
        # Checked here because the runtime's client aborts the process when it times out.
        raise RuntimeError(f"could not join the multi-host runtime at {where} within {timeout_s} s: nothing "
                           f"accepts connections at {coordinator_address}. {hint}")
    logging.info("joining the multi-host runtime at %s (timeout %d s)", where, timeout_s)
    try:
        jax.distributed.initialize(initialization_timeout=timeout_s, **arguments)
    except Exception as error:  # noqa: BLE001 - the runtime raises several kinds; all mean "could not join"
        raise RuntimeError(f"could not join the multi-host runtime at {where} within {timeout_s} s: {error}. {hint}") \
            from error
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def _reachable(address: str, timeout_s: float) -> bool:
    """Whether something accepts TCP connections at host:port within timeout_s seconds."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def make_mesh(axes: Sequence[tuple[str, int]], devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh from [(name, size), ...]; one size may be -1 (all remaining devices)."""
    devices = list(jax.devices() if devices is None else devices)
    names = [name for name, _ in axes]
    sizes = [int(size) for _, size in axes]
    for required in BATCH_AXES:
        if required not in names:
            raise ValueError(f"mesh {list(axes)} lacks axis {required!r}; it needs axes {BATCH_AXES}")
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {sizes} invalid: positive sizes and at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh {list(axes)}: {len(devices)} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {list(zip(names, sizes))} has {math.prod(sizes)} devices but {len(devices)} are present; "
            "make the sizes multiply to the device count (one may be -1)"
        )
    device_grid = np.asarray(devices).reshape(sizes)
    return Mesh(device_grid, tuple(names))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def path_string(path) -> str:
    parts = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _spec_for(shape: tuple[int, ...], rule: str, fsdp_size: int, min_size: int) -> P:
    if rule == "replicate" or fsdp_size == 1 or math.prod(shape) < min_size:
        return P()
    candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp_size == 0]
    if not candidates:
        return P()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return P(*spec)


def tree_shardings(tree, mesh: Mesh, rules: Sequence[tuple[str, str]] = DEFAULT_RULES,
                   min_fsdp_size: int = MIN_FSDP_SIZE):
    """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
    compiled = []
    for pattern, rule in rules:
        if rule not in RULES:
            raise ValueError(f"sharding rule {rule!r} for {pattern!r} unknown; valid: {RULES}")
        compiled.append((re.compile(pattern), rule))
    fsdp_size = mesh.shape.get("fsdp", 1)

    def choose(path, leaf):
        name = path_string(path)
        rule = next((r for regex, r in compiled if regex.search(name)), "replicate")
        return NamedSharding(mesh, _spec_for(tuple(np.shape(leaf)), rule, fsdp_size, min_fsdp_size))

    return jax.tree_util.tree_map_with_path(choose, tree)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble each host's slice of the batch into global arrays split over BATCH_AXES."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def batch_devices(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)
