"""Training checkpoints with Orbax: model, optimizer, data-iterator position and the
architecture, saved together, asynchronously, keeping the newest K.

Orbax writes each step into a temporary directory and renames it only when complete,
so a crash mid-write never leaves a corrupt checkpoint as the latest.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint of a different architecture."""


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: Any, meta: dict, force: bool = False) -> bool:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"position": data_state}),
            meta=ocp.args.JsonSave(meta),
        )
        return self.manager.save(step, args=args, force=force)

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def check_compatible(self, step: int, meta: dict) -> None:
        saved = self.read_meta(step)
        if saved.get("model_config") != meta["model_config"]:
            raise CheckpointMismatchError(
                f"{self.directory} holds a checkpoint (step {step}) of model {saved.get('model')!r} "
                f"{saved.get('model_config')}, but the config asks for {meta['model']!r} {meta['model_config']}; "
                "use another --workdir or the same model"
            )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """(state placed with the shardings of `abstract_state`, data position)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
        ))
        return restored["state"], restored["data"]["position"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def meta_for(model_spec, model_config) -> dict:
    """The architecture saved with every checkpoint: `model_config` (what readers build the
    model from) and a label of how the config named it (a registered name, a JSON path,
    or the registered name matching custom dimensions, else "custom")."""
    if not isinstance(model_spec, str):
        from clip_jax.models import name_of

        model_spec = name_of(model_config) or "custom"
    return {"model": model_spec, "model_config": json.loads(model_config.to_json())}
