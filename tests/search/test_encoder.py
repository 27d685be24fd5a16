"""clip_jax.search.encoder: the model fingerprint an index is tied to stays what it was
for indexes built before `VisionConfig.tower` existed (same weights, same architecture)."""
import dataclasses
import hashlib
import json

import jax
import numpy as np

import clip_jax
from clip_jax.search.encoder import fingerprint


def fingerprint_before_tower(config, variables) -> str:
    """The fingerprint as it was computed before the field: the config JSON without it."""
    data = dataclasses.asdict(config)
    del data["vision"]["tower"]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0],
                             key=lambda item: jax.tree_util.keystr(item[0])):
        values = np.ascontiguousarray(np.asarray(leaf, dtype=np.float32)).astype("<f4", copy=False)
        digest.update(f"\n{jax.tree_util.keystr(path)}:{values.shape}\n".encode())
        digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def test_fingerprint_of_existing_indexes_is_unchanged():
    for name in ("tiny-vit", "tiny-resnet", "tiny-siglip"):
        model = clip_jax.create_model(name)
        variables = clip_jax.init_variables(model)
        assert fingerprint(model.config, variables) == fingerprint_before_tower(model.config, variables), name
        other = clip_jax.init_variables(model, seed=1)
        assert fingerprint(model.config, other) != fingerprint(model.config, variables)
