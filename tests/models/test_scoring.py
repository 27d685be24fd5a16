"""The scoring rule follows the training loss, not the model family: configs/beyond.py:siglip
trains a CLIP-family model with the sigmoid loss, so its temperature is not capped at 100,
its checkpoint records the rule, and everything that loads it scores with a sigmoid plus
its bias (the real train.py run, then load_checkpoint and zero-shot probabilities)."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import clip_jax
from clip_jax.evaluation.zeroshot import classifier_weights, zero_shot_probabilities, zero_shot_scores
from clip_jax.models import SCORING_RULES
from clip_jax.sharding import global_batch
from clip_jax.trainer import build, jit_train_step
from tests.helpers.runtime import ROOT, load_config
from tests.helpers.training import SyntheticIterator


def one_step_from_scale(config, logit_scale):
    """logit_scale (log space) after one step that starts from `logit_scale`."""
    setup = build(config)
    state = setup.init_state(jax.random.key(0, impl="rbg"))
    params = dict(state.params, logit_scale=jax.numpy.asarray(logit_scale, jax.numpy.float32))
    state = state.replace(params=params)
    data = SyntheticIterator(setup.local_batch_size, setup.model.config.vision.image_size, 0)
    state, _ = jit_train_step(setup)(state, global_batch(next(data), setup.mesh))
    return float(state.params["logit_scale"])


def test_sigmoid_loss_gives_a_clip_model_the_sigmoid_rule_without_the_cap():
    config = load_config("beyond", "siglip,runlocal")
    setup = build(config)
    assert (setup.model.config.family, setup.model.scoring) == ("clip", "sigmoid")
    assert setup.meta["loss"] == "sigmoid" and setup.meta["scoring"] == "sigmoid"
    high = float(np.log(300.0))  # above the softmax rule's cap of 100
    assert one_step_from_scale(config, high) > np.log(100.0) + 0.5
    softmax = load_config("beyond", "ring,runlocal")
    assert build(softmax).model.scoring == "softmax"
    assert one_step_from_scale(softmax, high) == pytest.approx(np.log(100.0))


def test_a_trained_sigmoid_clip_model_is_scored_with_its_sigmoid(tmp_path):
    workdir = str(tmp_path / "run")
    env = {**os.environ, "XLA_FLAGS": ""}
    done = subprocess.run([sys.executable, "train.py", "--config", "configs/beyond.py:siglip,runlocal",
                           "--workdir", workdir], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    model, variables = clip_jax.load_checkpoint(workdir)
    assert (model.config.family, model.scoring) == ("clip", "sigmoid") and "logit_bias" in variables["params"]

    images = np.random.RandomState(0).randn(3, 32, 32, 3).astype(np.float32)
    features = clip_jax.encode_image(model, variables, images)
    weights = classifier_weights(model, variables, ["circle", "square", "triangle", "star"], ["a {}"])
    probs = zero_shot_probabilities(model, variables, features, weights)
    params = variables["params"]
    cosine = zero_shot_scores(features, weights)
    logits = np.exp(float(params["logit_scale"])) * cosine + float(params["logit_bias"])
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs.sum(axis=1), 1.0)  # not a softmax over the classes

    # The rule travels with clip_jax's own format; formats that cannot record it refuse.
    path = clip_jax.export_checkpoint(model, variables, str(tmp_path / "m.safetensors"), "clip_jax")
    again, _ = clip_jax.load_checkpoint(path)
    assert again.scoring_rule is SCORING_RULES["sigmoid"]
    with pytest.raises(ValueError, match="export it as 'clip_jax'"):
        clip_jax.export_checkpoint(model, variables, str(tmp_path / "hf"), "hf")
