"""Training checkpoints: the one owner of their layout, for writing (the trainer) and
reading (`load_checkpoint` of a workdir).

Layout, written by Orbax into `WORKDIR/checkpoints/`:

    <step>/state/   the TrainState (parameters, BatchNorm statistics, optimizer state, ...)
    <step>/data/    the data iterator's position after that step (JSON)
    <step>/meta/    the model's registered name and architecture (JSON)

Saves are asynchronous and keep the newest K.  Orbax writes each step into a temporary
directory and renames it only when complete, so a crash mid-write never leaves a corrupt
checkpoint as the latest.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from clip_jax.models.config import CLIPConfig

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

    def save(self, step: int, state: Any, data_state: Any, meta: dict, force: bool = False) -> bool:
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave({"position": data_state}),
            META: ocp.args.JsonSave(meta),
        })
        return self.manager.save(step, args=args, force=force)

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
        return dict(restored[META])

    def check_compatible(self, step: int, meta: dict) -> None:
        saved = self.read_meta(step)
        # Compared as configs: a field added since the checkpoint was saved takes its default.
        if _config_of(saved.get("model_config")) != _config_of(meta["model_config"]):
            raise CheckpointMismatchError(
                f"{self.directory} holds a checkpoint (step {step}) of model {saved.get('model')!r} "
                f"{saved.get('model_config')}, but the config asks for {meta['model']!r} {meta['model_config']}; "
                "use another --workdir or the same model"
            )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """(state placed with the shardings of `abstract_state`, data position)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state),
            DATA: ocp.args.JsonRestore(),
        }))
        return restored[STATE], restored[DATA]["position"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _config_of(saved: dict | None):
    try:
        return CLIPConfig.from_dict(saved)
    except (KeyError, TypeError, ValueError):
        return saved


def meta_for(model_spec, model_config) -> dict:
    """The architecture saved with every checkpoint: `model_config` (what readers build the
    model from) and a label of how the config named it (a registered name, a JSON path,
    or the registered name matching custom dimensions, else "custom")."""
    if not isinstance(model_spec, str):
        from clip_jax.models import name_of

        model_spec = name_of(model_config) or "custom"
    return {"model": model_spec, "model_config": json.loads(model_config.to_json())}


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
    """(architecture as saved in the metadata, {"params", "batch_stats"} as NumPy) of
    one step directory, without the optimizer state."""
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
    return meta["model_config"], jax.tree.map(np.asarray, restored)
