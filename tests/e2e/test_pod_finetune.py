"""Fine-tuning on a pod, as users run it: `train.py` with configs/finetune.py (cross-entropy
with a zero-shot-initialised head, and LoRA adapters) started as two processes joined by
jax.distributed on loopback, on labelled WebDataset shards this test writes (an image that
does not decode and an example without a label in every shard), killed at a random moment
once a checkpoint exists and started again: it ends with the parameters, head and adapters
of an uninterrupted run, and the unlabelled examples are skipped and counted."""
import json
import random
import time

import numpy as np
import pytest

import clip_jax
from clip_jax.data.demo import class_prompts
from tests.helpers.pod import Pod, checkpoint_steps, demo_shards, logged_losses, wait_for

STEPS = 6
TIMEOUT = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pod_finetune")
    spec, _ = demo_shards(str(root / "shards"), num_shards=4, labels=True)
    names = root / "classes.txt"
    names.write_text("\n".join(class_prompts()) + "\n")
    model = clip_jax.create_model("tiny-vit")
    start = clip_jax.export_checkpoint(model, clip_jax.init_variables(model, seed=2), str(root / "start.safetensors"))
    return root, spec, str(names), start


def args(workdir, spec, names, start):
    return ["--config", f"configs/finetune.py:{spec},ce,runlocal,model=tiny-vit,init={start}",
            "--workdir", str(workdir), f"--config.total_steps={STEPS}", "--config.checkpoint_every=2",
            "--config.log_every=1", f"--config.finetune.class_names={names}", "--config.finetune.templates={}",
            "--config.optim.lr=0.002", "--config.data.options.units_per_block=1",
            "--config.data.options.shuffle_buffer=16",
            "--config.lora.targets=('^visual/transformer/blocks/attn/(in|out)_proj/kernel$',)", "--config.lora.rank=2"]


def state_params(workdir) -> dict:
    """Every saved parameter of the newest step, adapters and head included (Orbax, not the
    merged reading), as flat NumPy arrays."""
    import jax

    from clip_jax import train_checkpoints

    _, variables = train_checkpoints.read_model(train_checkpoints.find_step_dir(str(workdir)))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]}


def test_killed_two_host_finetune_ends_like_an_uninterrupted_run(setup):
    root, spec, names, start = setup
    reference = root / "reference"
    pod = Pod(args(reference, spec, names, start), 2, 1, str(root / "logs"))
    assert pod.wait(TIMEOUT) == [0, 0], pod.tail()

    workdir = root / "run"
    pod = Pod(args(workdir, spec, names, start), 2, 1, str(root / "logs"))
    assert wait_for(lambda: bool(checkpoint_steps(workdir)), TIMEOUT, pod), pod.tail()
    time.sleep(random.Random(1).uniform(0.0, 0.5))  # inside a step or a save
    pod.kill()
    assert max(checkpoint_steps(workdir)) < STEPS
    pod = Pod(args(workdir, spec, names, start), 2, 1, str(root / "logs"))
    assert pod.wait(TIMEOUT) == [0, 0], pod.tail()

    ours, theirs = state_params(workdir), state_params(reference)
    assert ours.keys() == theirs.keys()
    assert any("'head'" in k for k in ours) and any("'lora'" in k for k in ours)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, atol=1e-6, err_msg=key)
    losses, expected = logged_losses(workdir), logged_losses(reference)
    assert sorted(losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses[s] for s in sorted(losses)], [expected[s] for s in sorted(expected)],
                               rtol=1e-5)
    with open(reference / "metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    assert last["data/skipped_labels"] > 0 and last["data/skipped_images"] > 0
    # The workdir reads back as plain weights with the head beside them, the base untouched where not adapted.
    _, merged = clip_jax.load_checkpoint(str(workdir))
    _, base = clip_jax.load_checkpoint(start)
    assert "lora" not in merged["params"] and merged["head"]["kernel"].shape == (32, len(class_prompts()))
    text, visual = (lambda v: v["params"]["text"]["token_embedding"],
                    lambda v: v["params"]["visual"]["transformer"]["blocks"]["attn"]["in_proj"]["kernel"])
    np.testing.assert_array_equal(text(merged), text(base))
    assert not np.array_equal(visual(merged), visual(base))
