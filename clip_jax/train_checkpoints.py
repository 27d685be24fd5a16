"""Training checkpoints: the one owner of their layout, for writing (the trainer) and
reading (`load_checkpoint` of a workdir).

Layout, written by Orbax into `WORKDIR/checkpoints/`:

    <step>/state/   the TrainState (parameters, BatchNorm statistics, optimizer state, ...)
    <step>/data/    every host's data iterator position after that step (JSON:
                    {"process_count": P, "hosts": [position of host 0, ...]})
    <step>/meta/    the model's registered name and architecture, and the run's
                    contract (global batch size, data spec, seed) (JSON)

The JSON items are written by the primary host only, so the data positions of all hosts
are gathered to every host (a small collective) before each save.  Saves are
asynchronous and keep the newest K.  Orbax writes each step into a temporary directory
and renames it only when every host's part is complete, so a crash mid-write (one host
killed during the save included) never leaves a corrupt checkpoint as the latest.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from clip_jax.models.architecture import CLIPConfig
from clip_jax.models.registry import name_of

STATE, DATA, META = "state", "data", "meta"
CHECKPOINTS_DIR = "checkpoints"


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint of a different architecture."""


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA, META))

    @classmethod
    def for_workdir(cls, workdir: str, **options) -> "Checkpointer":
        return cls(os.path.join(workdir, CHECKPOINTS_DIR), **options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_states: list, meta: dict, force: bool = False) -> bool:
        """Save `state` and `data_states` (every host's data position, in process order:
        gather_from_hosts) at `step`; every host calls it."""
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave({"process_count": len(data_states), "hosts": data_states}),
            META: ocp.args.JsonSave(meta),
        })
        return self.manager.save(step, args=args, force=force)

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
        return dict(restored[META])

    def check_compatible(self, step: int, meta: dict) -> None:
        """Refuse to resume a checkpoint of another model or run contract (global batch,
        data spec, seed), naming both values."""
        saved = self.read_meta(step)
        # Compared as configs: a field added since the checkpoint was saved takes its default.
        if _config_of(saved.get("model_config")) != _config_of(meta["model_config"]):
            raise CheckpointMismatchError(
                f"{self.directory} holds a checkpoint (step {step}) of model {saved.get('model')!r} "
                f"{saved.get('model_config')}, but the config asks for {meta['model']!r} {meta['model_config']}; "
                "use another --workdir or the same model"
            )
        saved_run, run = saved.get("run", {}), meta.get("run", {})
        for key in sorted(set(saved_run) & set(run)):
            if saved_run[key] != run[key]:
                raise CheckpointMismatchError(
                    f"{self.directory} holds a checkpoint (step {step}) trained with {key}={saved_run[key]!r}, but "
                    f"the config asks for {key}={run[key]!r}; a resumed run keeps its {', '.join(RUN_CONTRACT)} "
                    "(use another --workdir, or init_from to start a new run from these weights)"
                )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, list]:
        """(state placed with the shardings of `abstract_state`, which may differ from the
        saving run's mesh and host count: Orbax reshards; every saving host's data
        position, in process order)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state),
            DATA: ocp.args.JsonRestore(),
        }))
        data = restored[DATA]
        if "hosts" not in data:  # written before every host's position was saved: host 0's only
            return restored[STATE], [data["position"]]
        if len(data["hosts"]) != data["process_count"]:
            raise ValueError(f"step {step} of {self.directory} holds {len(data['hosts'])} data positions for "
                             f"{data['process_count']} hosts; the checkpoint is damaged")
        return restored[STATE], list(data["hosts"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def gather_from_hosts(value: Any) -> list:
    """Every host's JSON-serialisable `value`, in process order, on every host (a
    collective: all hosts call it)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    encoded = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([encoded.size], np.int64))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:encoded.size] = encoded
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, lengths)]


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _config_of(saved: dict | None):
    try:
        return CLIPConfig.from_dict(saved)
    except (KeyError, TypeError, ValueError):
        return saved


RUN_CONTRACT = ("batch_size", "data", "seed")


def run_contract(config) -> dict:
    """What a resumed run must keep, from a training config: RUN_CONTRACT's values."""
    return {"batch_size": config.batch_size, "data": config.data.train, "seed": config.seed}


def meta_for(model_spec, model_config, run: dict | None = None, loss: str | None = None,
             scoring: str | None = None, adapter_scale: float | None = None) -> dict:
    """The model saved with every checkpoint: `model_config` (what readers build the
    model from), a label of how the config named it (a registered name, a JSON path, or
    the registered name matching custom dimensions, else "custom"), the training `loss`
    and the `scoring` rule it gives the model (which readers honour); and `run`, what a
    resumed run must keep (run_contract)."""
    if not isinstance(model_spec, str):
        model_spec = name_of(model_config) or "custom"
    meta = {"model": model_spec, "model_config": json.loads(model_config.to_json())}
    if loss is not None:
        meta["loss"] = loss
    if scoring is not None:
        meta["scoring"] = scoring
    if run is not None:
        meta["run"] = dict(run)
    if adapter_scale is not None:  # LoRA: readers merge params["lora"] into the weights with it
        meta["lora_scale"] = adapter_scale
    return meta


def find_step_dir(path: str) -> str | None:
    """The newest complete step directory of a training workdir, of its checkpoints/
    folder, or `path` itself if it is a step directory; None if it is none of these."""
    for folder in (path, os.path.join(path, CHECKPOINTS_DIR)):
        if os.path.isdir(os.path.join(folder, STATE)) and os.path.isdir(os.path.join(folder, META)):
            return folder
        if os.path.isdir(folder):
            steps = sorted((int(n) for n in os.listdir(folder)
                            if n.isdigit() and os.path.isdir(os.path.join(folder, n, STATE))), reverse=True)
            if steps:
                return os.path.join(folder, str(steps[0]))
    return None


def read_model(step_dir: str) -> tuple[dict, dict]:
    """(the metadata saved with the step (meta_for), {"params", "batch_stats"} as NumPy)
    of one step directory, without the optimizer state."""
    with open(os.path.join(step_dir, META, "metadata")) as f:
        meta = json.load(f)
    checkpointer = ocp.PyTreeCheckpointer()
    state_dir = os.path.join(step_dir, STATE)
    tree = checkpointer.metadata(state_dir).item_metadata.tree
    wanted = {k: tree[k] for k in ("params", "batch_stats") if tree.get(k)}
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), wanted)
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    return meta, jax.tree.map(np.asarray, restored)
