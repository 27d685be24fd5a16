"""Fine-tuning as users run it: train.py with configs/finetune.py on a realistic class
folder (greyscale and palette PNGs, odd sizes, duplicate images, a zero-byte and a
truncated file), on one CPU device and on eight simulated ones, then eval.py on the
workdir.  Both losses train the same on either layout; the cross-entropy run's head is
what eval.py scores with; the broken files are skipped and counted."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import clip_jax
from clip_jax import classifier
from tests.helpers import realistic
from tests.helpers.pod import checkpoint_params
from tests.helpers.runtime import ROOT


def run(args, devices: int, timeout=600):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def logged(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_commands")
    spec = realistic.class_folder(str(root / "train"), per_class=10)
    with open(root / "train" / "red" / "empty.png", "wb"):
        pass
    with open(root / "train" / "blue" / "0001.png", "rb") as f:
        head = f.read()[:60]
    with open(root / "train" / "blue" / "truncated.png", "wb") as f:
        f.write(head)
    model = clip_jax.create_model("tiny-vit")
    checkpoint = clip_jax.export_checkpoint(model, clip_jax.init_variables(model, seed=5),
                                            str(root / "tiny.safetensors"))
    workdirs = {}
    for loss in ("ce", "flyp"):
        for devices in (1, 8):
            workdir = str(root / f"{loss}-{devices}")
            done = run(["train.py", "--config", f"configs/finetune.py:{spec},{loss},runlocal", "--workdir", workdir,
                        "--config.model=tiny-vit", f"--config.init_from={checkpoint}", "--config.optim.lr=1e-3",
                        "--config.finetune.templates=a photo of a {}."], devices)
            assert done.returncode == 0, done.stderr[-3000:]
            workdirs[loss, devices] = workdir
    return spec, workdirs, checkpoint, root


@pytest.mark.parametrize("loss", ["ce", "flyp"])
def test_eight_devices_train_as_one(runs, loss):
    _, workdirs, _, _ = runs
    one, eight = logged(workdirs[loss, 1]), logged(workdirs[loss, 8])
    np.testing.assert_allclose([r["loss"] for r in eight], [r["loss"] for r in one], rtol=1e-5)
    # the zero-byte and the truncated file, skipped in every pass (the counters include
    # batches the prefetcher has already taken)
    assert one[-1]["data/skipped_images"] >= 2
    reference, other = checkpoint_params(workdirs[loss, 1]), checkpoint_params(workdirs[loss, 8])
    assert reference.keys() == other.keys()
    if loss == "ce":
        assert any(k.startswith("['head']") for k in reference)
    for key in reference:
        ours, theirs = other[key], reference[key]
        if key.endswith("['in_proj']['bias']"):
            # The key projection's bias has a gradient of exactly 0 (a softmax does not see
            # a constant added to all its logits): Adam turns its rounding noise into steps
            # of up to lr either way.  Compare the query and value parts.
            width = ours.shape[-1] // 3
            ours, theirs = np.delete(ours, np.s_[width:2 * width], -1), np.delete(theirs, np.s_[width:2 * width], -1)
        # Adam can move a parameter by up to lr (1e-3) per step on rounding alone where its
        # gradient is ~0; 1e-4 is a tenth of such a step.
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=f"{loss}: {key}")


def test_eval_scores_a_cross_entropy_workdir_with_its_head(runs, tmp_path):
    spec, workdirs, _, _ = runs
    workdir = workdirs["ce", 1]
    output = tmp_path / "r.json"
    done = run(["eval.py", "--checkpoint", workdir, "--data", spec, "--batch_size", "32", "--output", str(output)], 1)
    assert done.returncode == 0, done.stderr[-3000:]
    top1 = json.load(open(output))["metrics"]["top1"]
    # The oracle: the head's logits on the evaluation features, by hand.
    from clip_jax import data
    from clip_jax.evaluation import features

    model, variables = clip_jax.load_checkpoint(workdir)
    batches = data.eval_batches(spec, batch_size=32, image_size=model.config.vision.image_size)
    feats = features.extract(model, classifier.model_variables(variables), batches)
    predicted = np.asarray(classifier.logits(feats.images, variables["head"])).argmax(1)
    assert top1 == pytest.approx(100 * np.mean(predicted == feats.labels))
    # A head of other classes is refused, naming both counts.
    done = run(["eval.py", "--checkpoint", workdir, "--data", "demo:heldout", "--templates", "{}"], 1)
    assert done.returncode != 0 and "head has 6 classes, the evaluation 18" in done.stderr


def _eval(tmp_path, name, *args):
    output = tmp_path / f"{name}.json"
    done = run(["eval.py", *args, "--batch_size", "32", "--templates", "a photo of a {}.", "--output", str(output)], 1)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.load(open(output))["metrics"]


def test_robustness_report_and_wise_ft_with_heads(runs, tmp_path):
    """eval.py --task robustness against plain evaluations of each set and model, and
    WiSE-FT's endpoints with mixed heads against the two models' own evaluations."""
    spec, workdirs, checkpoint, root = runs
    shifted = realistic.class_folder(str(root / "shifted"), per_class=6, seed=9)
    workdir = workdirs["ce", 1]
    report = _eval(tmp_path, "report", "--checkpoint", workdir, "--task", "robustness", "--data", spec,
                   "--shift", shifted, "--baseline", checkpoint)
    plain = {(who, data): _eval(tmp_path, f"{who}-{i}", "--checkpoint", path, "--data", data)["top1"]
             for who, path in (("ft", workdir), ("zs", checkpoint)) for i, data in enumerate((spec, shifted))}
    assert report["id_top1"] == plain["ft", spec] and report["shifted_top1"] == plain["ft", shifted]
    assert report["baseline_id_top1"] == plain["zs", spec]
    assert report["shift_avg_top1"] == plain["ft", shifted]
    assert report["effective_robustness"] == pytest.approx(
        (plain["ft", shifted] - plain["zs", shifted]) - (plain["ft", spec] - plain["zs", spec]))

    output = tmp_path / "wise.json"
    done = subprocess.run([sys.executable, "-m", "clip_jax.wise_ft", "--zeroshot", checkpoint, "--finetuned", workdir,
                           "--alphas", "0,0.5,1", "--data", spec, "--shift", shifted, "--templates",
                           "a photo of a {}.", "--batch_size", "32", "--output", str(output), "--save_alpha", "0.5",
                           "--save", str(tmp_path / "mixed.safetensors")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XLA_FLAGS": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = {row["alpha"]: row for row in json.load(open(output))["sweep"]}
    assert sweep[1.0]["id"] == plain["ft", spec] and sweep[1.0]["shifts"] == [plain["ft", shifted]]
    # α = 0: the zero-shot model with the zero-shot head the fine-tune started from
    assert sweep[0.0]["id"] == plain["zs", spec] and sweep[0.0]["shifts"] == [plain["zs", shifted]]
    _, mixed = clip_jax.load_checkpoint(str(tmp_path / "mixed.safetensors"))
    _, ft = clip_jax.load_checkpoint(workdir)
    assert mixed["head"]["kernel"].shape == ft["head"]["kernel"].shape
