"""The trainer: loss falls, exact resume, sharded layouts and processes agree, bad
configs fail before compiling, and NaN/Inf are caught."""
import json
import os
import signal
import subprocess

import jax
import numpy as np
import pytest

from clip_jax.optim import decay_mask
from clip_jax.sharding import path_string
from clip_jax.train_checkpoints import CheckpointMismatchError
from clip_jax.trainer import NonFiniteLossError, build, train
from tests.helpers.runtime import ROOT, free_port, worker
from tests.helpers.training import SyntheticIterator, synthetic_data, tiny_config


def losses_of(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def flat_params(state):
    return {path_string(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}


def test_loss_falls_and_metrics_are_written(tmp_path):
    train(tiny_config(total_steps=24, log_every=4, checkpoint_every=12, **{"optim.lr": 2e-3}),
          str(tmp_path), synthetic_data)
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 4, 8, 12, 16, 20, 24]  # the first step, then every 4
    for key in ("loss", "i2t_accuracy", "t2i_accuracy", "logit_scale", "lr", "grad_norm", "examples_per_s",
                "examples_per_s_per_device", "data_wait_s", "compute_s"):
        assert key in records[-1]
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    assert os.listdir(tmp_path / "tensorboard")
    assert sorted(os.listdir(tmp_path / "checkpoints"))[:2] == ["12", "24"]


def test_resume_after_sigterm_is_exact(tmp_path):
    config = tiny_config(total_steps=8, log_every=1, checkpoint_every=1000, async_checkpoints=True)
    reference = flat_params(train(config, str(tmp_path / "straight"), synthetic_data))

    def interrupting_data(setup, seed):
        iterator = synthetic_data(setup, seed)
        original = iterator.__next__

        def next_then_signal():
            if iterator.position == 4:
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer saves and exits
            return original()

        iterator.__next__ = next_then_signal
        return _Wrapper(iterator, next_then_signal)

    interrupted = train(config, str(tmp_path / "resumed"), interrupting_data)
    stopped_at = int(interrupted.step)
    assert 0 < stopped_at < 8
    resumed = flat_params(train(config, str(tmp_path / "resumed"), synthetic_data))
    for key, value in reference.items():
        np.testing.assert_allclose(resumed[key], value, atol=1e-6, err_msg=key)


class _Wrapper:
    def __init__(self, iterator, next_fn):
        self._iterator, self._next = iterator, next_fn

    def __next__(self):
        return self._next()

    def __getattr__(self, name):
        return getattr(self._iterator, name)


def test_weight_decay_groups():
    setup = build(tiny_config())
    mask = {path_string(p): v for p, v in jax.tree_util.tree_flatten_with_path(
        decay_mask(setup.abstract_state.params))[0]}
    assert mask["visual/transformer/blocks/attn/in_proj/kernel"]
    assert mask["visual/proj"] and mask["text/text_projection"] and mask["visual/conv1/kernel"]
    for excluded in ("logit_scale", "text/token_embedding", "text/positional_embedding", "visual/class_embedding",
                     "visual/ln_pre/scale", "visual/transformer/blocks/mlp/c_fc/bias"):
        assert not mask[excluded], excluded


def test_fsdp_shards_large_tensors_and_replicates_small_ones():
    setup = build(tiny_config(mesh=(("data", 2), ("fsdp", 4))))
    specs = {path_string(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(setup.state_shardings.params)[0]}
    assert specs["text/token_embedding"] == jax.sharding.PartitionSpec("fsdp", None)  # (49408, 64)
    assert specs["logit_scale"] == jax.sharding.PartitionSpec()
    assert specs["visual/ln_pre/scale"] == jax.sharding.PartitionSpec()  # 64 elements: replicated
    state = setup.init_state(jax.random.key(0, impl="rbg"))
    embedding = state.params["text"]["token_embedding"]
    assert embedding.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    assert embedding.addressable_shards[0].data.shape == (49408 // 4, 64)


@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 12}, "not divisible by the 8 devices"),
    ({"mesh": (("data", 3), ("fsdp", 2))}, "has 6 devices but 8 are present"),
    ({"mesh": (("data", -1),)}, "lacks axis 'fsdp'"),
    ({"optim.lr": -1.0}, "optim.lr must be >= 0"),
    ({"loss": "hinge"}, "loss 'hinge' unknown"),
    ({"total_steps": 0}, "exactly one of total_steps"),
])
def test_bad_configs_fail_before_compiling(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(tiny_config(**overrides))


def test_workdir_of_another_architecture(tmp_path):
    train(tiny_config(total_steps=1, checkpoint_every=1), str(tmp_path), synthetic_data)
    with pytest.raises(CheckpointMismatchError, match="tiny-vit"):
        train(tiny_config(total_steps=2, model="tiny-resnet"), str(tmp_path), synthetic_data)


@pytest.mark.parametrize("key, value", [("batch_size", 32), ("seed", 1), ("data.train", "demo:train")])
def test_resuming_with_another_run_contract_is_refused_naming_both_values(tmp_path, key, value):
    config = tiny_config(total_steps=1, checkpoint_every=1, **{"data.train": "wds:/data/a-{000..009}.tar"})
    train(config, str(tmp_path), synthetic_data)
    old = {"batch_size": 16, "seed": 0, "data.train": "wds:/data/a-{000..009}.tar"}[key]
    name = key.split(".")[0]
    with pytest.raises(CheckpointMismatchError, match=f"{name}={old!r}.*{name}={value!r}"):
        train(tiny_config(total_steps=2, **{"data.train": "wds:/data/a-{000..009}.tar", key: value}), str(tmp_path),
              synthetic_data)


def test_a_half_written_step_is_never_the_latest(tmp_path):
    """What a host killed mid-save leaves: Orbax's temporary folder of a later step."""
    from clip_jax.convert import read_checkpoint
    from clip_jax.train_checkpoints import find_step_dir

    train(tiny_config(total_steps=2, checkpoint_every=2), str(tmp_path), synthetic_data)
    half = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1796560000"
    (half / "state").mkdir(parents=True)
    (half / "state" / "garbage").write_bytes(b"\x00" * 100)
    assert find_step_dir(str(tmp_path)).endswith(os.path.join("checkpoints", "2"))
    read_checkpoint(str(tmp_path))
    state = train(tiny_config(total_steps=3, checkpoint_every=2), str(tmp_path), synthetic_data)
    assert int(state.step) == 3


def poisoned_data(setup, seed):
    iterator = synthetic_data(setup, seed)
    iterator.poison_at = 2  # the third batch, i.e. step 3
    return iterator


def test_nan_stops_naming_step_and_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step 3.*Last good checkpoint: step 2"):
        train(tiny_config(total_steps=6, log_every=1, checkpoint_every=2), str(tmp_path), poisoned_data)


def test_init_from_a_checkpoint_file(tmp_path):
    import clip_jax

    model = clip_jax.create_model("tiny-vit")
    variables = clip_jax.init_variables(model, seed=7)
    path = clip_jax.export_checkpoint(model, variables, str(tmp_path / "init.safetensors"), "open_clip")
    config = tiny_config(total_steps=1, init_from=path, **{"optim.lr": 0.0})
    state = train(config, str(tmp_path / "run"), synthetic_data)
    np.testing.assert_array_equal(np.asarray(state.params["visual"]["proj"]),
                                  np.asarray(variables["params"]["visual"]["proj"]))


def _worker(tmp_path, name, *args):
    out = tmp_path / f"{name}.npz"
    return worker("train", "--workdir", tmp_path / name, "--out", out, *args), out


def test_device_layouts_and_processes_give_the_same_training(tmp_path):
    """1 device, 8 devices (data parallel), 8 devices (2 data x 4 fsdp), and 2 processes
    x 4 devices joined by jax.distributed: the same loss trajectory and parameters."""
    runs = {}
    for name, args in [("one", ["--devices", "1"]), ("eight", ["--devices", "8"]),
                       ("fsdp", ["--devices", "8", "--mesh", "data=2,fsdp=4"])]:
        command, out = _worker(tmp_path, name, *args)
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = out
    port = str(free_port())
    commands = [_worker(tmp_path, "hosts", "--devices", "4", "--num_processes", "2", "--process_id", str(i),
                        "--port", port) for i in range(2)]
    workers = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c, _ in commands]
    for process in workers:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    runs["hosts"] = commands[0][1]
    reference = np.load(runs["one"])
    reference_losses = losses_of(tmp_path / "one")
    for name in ("eight", "fsdp", "hosts"):
        np.testing.assert_allclose(losses_of(tmp_path / name), reference_losses, rtol=1e-5, err_msg=name)
        other = np.load(runs[name])
        for key in reference.files:
            # Adam normalises each update, so a parameter whose gradient is ~0 can move by
            # up to lr (1e-3) on float rounding alone; 1e-4 is a tenth of one such step.
            np.testing.assert_allclose(other[key], reference[key], atol=1e-4, err_msg=f"{name}: {key}")


def test_trimming_batches_of_different_lengths(tmp_path, caplog):
    """A batch whose longest caption fills the context compiles a second step shape."""

    class MixedLengths(SyntheticIterator):
        def __next__(self):
            batch = super().__next__()
            if self.position % 2:
                batch["tokens"] = batch["tokens"].copy()
                batch["tokens"][0] = clip_jax_tokenize(["word " * 100])[0]
            return batch

    from clip_jax import tokenize as clip_jax_tokenize

    def data(setup, seed):
        return MixedLengths(setup.local_batch_size, setup.model.config.vision.image_size, seed)

    import logging

    with caplog.at_level(logging.INFO):
        train(tiny_config(total_steps=4, trim_text="always"), str(tmp_path), data)
    compiled = sorted(int(r.getMessage().split(" for ")[1].split()[0]) for r in caplog.records
                      if r.getMessage().startswith("compiled the train step for"))
    assert compiled == [16, 77]
    assert np.isfinite(losses_of(tmp_path)).all()


def test_trimming_is_off_where_unsafe():
    from clip_jax.sharding import make_mesh
    from clip_jax.trainer import trimming_is_safe

    assert trimming_is_safe(make_mesh([("data", 1), ("fsdp", 1)], jax.devices()[:1]))
    assert not trimming_is_safe(make_mesh([("data", -1), ("fsdp", 1)]))  # 8 simulated CPU devices
