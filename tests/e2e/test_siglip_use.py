"""Using SigLIP models: preprocessing as transformers' SiglipImageProcessor, zero-shot
probabilities equal to transformers' sigmoid scores end to end (PIL images and text in),
evaluations through run_evals, eval.py and the demo, and fine-tuning from a Hugging Face
folder with the sigmoid loss and a locked image tower."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import clip_jax
from clip_jax.evaluation import run_evals
from clip_jax.evaluation.zeroshot import (
    DEFAULT_TEMPLATES,
    classifier_weights,
    default_templates,
    zero_shot_probabilities,
)
from tests.helpers import runtime
from tests.helpers.runtime import ROOT
from tests.helpers.siglip import train_sentencepiece


def awkward_images():
    rs = np.random.RandomState(0)
    rgb = lambda h, w: Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    return {
        "rgb_wide_odd": rgb(257, 301),
        "rgb_tall": rgb(403, 229),
        "rgb_tiny": rgb(17, 40),
        "exact_size": rgb(32, 32),
        "palette": rgb(250, 300).convert("P", palette=Image.ADAPTIVE, colors=64),
        "rgba": Image.fromarray(rs.randint(0, 256, (260, 280, 4), dtype=np.uint8), "RGBA"),
        "greyscale": rgb(300, 260).convert("L"),
        "cmyk": rgb(240, 250).convert("CMYK"),
    }


@pytest.mark.parametrize("size", [32, 224])
def test_preprocess_matches_siglip_image_processor(size):
    transformers = pytest.importorskip("transformers")
    processor = transformers.SiglipImageProcessor(size={"height": size, "width": size}, do_convert_rgb=True)
    for name, image in awkward_images().items():
        theirs = processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        ours = clip_jax.preprocess(image, size, family="siglip")
        assert ours.shape == (size, size, 3) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="unknown model family 'vit' for preprocessing"):
        clip_jax.preprocess(image, size, family="vit")


def test_eval_pipeline_siglip_transform_matches_preprocess(tmp_path):
    """The tf.data transform (decode, resize the whole image, [-1, 1]) against the PIL one."""
    import tensorflow as tf

    from clip_jax.data import image_ops

    for name, image in awkward_images().items():
        if name == "cmyk":
            continue  # PNG has no CMYK
        path = tmp_path / f"{name}.png"
        image.save(path)
        got = image_ops.eval_image(tf.constant(path.read_bytes()), 48, family="siglip").numpy()
        with Image.open(path) as reopened:
            expected = clip_jax.preprocess(reopened, 48, family="siglip")
        # PIL and the two-pass TF resize agree to a few levels of 255 (test_data_pipeline.py).
        assert np.abs(got - expected).max() * 127.5 <= 4, name


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A Hugging Face SiglipModel folder of the tiny-siglip architecture (perturbed random
    weights, a temperature above CLIP's cap) with a test-trained spiece.model."""
    folder = tmp_path_factory.mktemp("tiny_siglip")
    model = clip_jax.create_model("tiny-siglip")
    variables = clip_jax.init_variables(model, seed=0)
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    variables = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) if x.ndim else x
                                          for x, k in zip(leaves, keys)])
    variables["params"]["logit_scale"] = np.float32(np.log(117.0))
    variables["params"]["logit_bias"] = np.float32(-3.0)
    clip_jax.export_checkpoint(model, variables, str(folder), "hf")
    shutil.copy(train_sentencepiece(tmp_path_factory.mktemp("spm"), "siglip"), folder / "spiece.model")
    return folder


def test_zero_shot_probabilities_equal_transformers_end_to_end(tiny_folder):
    """PIL images and class names in, probabilities out: ours (preprocess, tokenizer,
    model, sigmoid rule) against transformers' processor, tokenizer and SiglipModel."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, variables = clip_jax.load_checkpoint(str(tiny_folder))
    assert model.config == clip_jax.get_config("tiny-siglip")
    names = ["red circle", "Green Square!", "blue triangle", "a cat, sleeping"]
    templates = default_templates(model.config)
    assert templates == ["This is a photo of {}."] == [DEFAULT_TEMPLATES["siglip"]]
    images = list(awkward_images().values())
    features = clip_jax.encode_image(model, variables, clip_jax.preprocess_batch(images, 32, family="siglip"))
    weights = classifier_weights(model, variables, names, templates, tokenizer=str(tiny_folder))
    ours = zero_shot_probabilities(model, variables, features, weights)

    reference = transformers.SiglipModel.from_pretrained(str(tiny_folder)).eval()
    tokenizer = transformers.SiglipTokenizer(str(tiny_folder / "spiece.model"), model_max_length=16)
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, do_convert_rgb=True)
    texts = [templates[0].format(n) for n in names]
    with torch.no_grad():
        out = reference(input_ids=tokenizer(texts, padding="max_length", return_tensors="pt")["input_ids"],
                        pixel_values=processor(images, return_tensors="pt")["pixel_values"])
    theirs = torch.sigmoid(out.logits_per_image).numpy()
    assert ours.shape == (len(images), len(names))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert float(np.exp(variables["params"]["logit_scale"])) > 100  # loaded as is: no CLIP cap at inference


def test_run_evals_on_a_siglip_model(tiny_folder, tmp_path):
    model, variables = clip_jax.load_checkpoint(str(tiny_folder))
    zeroshot = {"name": "z", "task": "zeroshot", "data": "demo:heldout?n=24", "batch_size": 8}
    retrieval = {"name": "r", "task": "retrieval", "data": "demo:heldout?n=24", "batch_size": 8}
    with pytest.raises(ValueError, match="evaluation 'z': this model uses the 'siglip' SentencePiece tokenizer"):
        run_evals(model, variables, [zeroshot])
    probe = {"name": "p", "task": "linear_probe", "data": "demo:heldout?n=24", "train_data": "demo:val?n=48",
             "batch_size": 8, "lambda": 1.0}
    results = run_evals(model, variables, [zeroshot, retrieval, probe], tokenizer=str(tiny_folder))
    assert results["eval/z/examples"] == 24 and 0 <= results["eval/z/top1"] <= 100
    assert 0 <= results["eval/r/image_to_text_recall@1"] <= results["eval/r/image_to_text_recall@5"] <= 100
    assert 0 <= results["eval/p/top1"] <= 100
    spec_tokenizer = run_evals(model, variables, [{**zeroshot, "tokenizer": f"siglip:{tiny_folder}"}])
    assert spec_tokenizer["eval/z/top1"] == results["eval/z/top1"]
    with pytest.raises(ValueError, match="is a 'gemma' tokenizer but the model was trained with the 'siglip' one"):
        run_evals(model, variables, [{**zeroshot, "tokenizer": f"gemma:{tiny_folder / 'spiece.model'}"}])


def run(*args):
    env = {**os.environ, "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_eval_py_on_a_siglip_folder(tiny_folder, tmp_path):
    output = tmp_path / "r.json"
    done = run("eval.py", "--checkpoint", str(tiny_folder), "--data", "demo:heldout?n=16", "--batch_size", "8",
               "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(output.read_text())["metrics"]["examples"] == 16


def test_demo_on_a_siglip_folder(tiny_folder, monkeypatch, capsys):
    from clip_jax import zero_shot_demo as demo

    monkeypatch.setattr(sys, "argv", ["demo", "--checkpoint", str(tiny_folder)])
    demo.main()
    assert "top-1 accuracy" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["demo", "--model", "tiny-siglip"])
    with pytest.raises(SystemExit):
        demo.main()
    assert "needs its SentencePiece tokenizer: pass --checkpoint" in capsys.readouterr().err


def load_config(arg):
    return runtime.load_config("siglip_finetune", arg)


def test_finetune_with_a_locked_image_tower(tiny_folder, tmp_path):
    from clip_jax import trainer

    config = load_config(f"{tiny_folder},lit,runlocal")
    assert (config.model, config.loss, config.init_from) == ("tiny-siglip", "sigmoid", str(tiny_folder))
    assert config.data.options.tokenizer == f"siglip:{tiny_folder}" and config.optim.frozen == (r"^visual/",)
    config.optim.lr = 1e-3  # large enough that every trained parameter visibly moves in 3 steps
    config.async_checkpoints = False
    state = trainer.train(config, str(tmp_path / "run"))
    _, before = clip_jax.load_checkpoint(str(tiny_folder))
    after = jax.tree.map(np.asarray, state.params)
    for a, b in zip(jax.tree.leaves(before["params"]["visual"]), jax.tree.leaves(after["visual"])):
        np.testing.assert_array_equal(a, b)  # locked
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(before["params"]["text"]),
                                                 jax.tree.leaves(after["text"]))]
    assert min(moved) > 0
    assert float(after["logit_scale"]) > np.log(100.0)  # SigLIP's temperature is not clipped to CLIP's cap
    assert float(after["logit_bias"]) != float(before["params"]["logit_bias"])
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f if '"loss"' in line]
    assert len(records) == 3 and all(np.isfinite(r["loss"]) and "logit_bias" in r for r in records)
    # The workdir reloads as the same SigLIP architecture.
    model, _ = clip_jax.load_checkpoint(str(tmp_path / "run"))
    assert model.config == clip_jax.get_config("tiny-siglip")


def test_finetune_config_errors(tiny_folder, tmp_path):
    from clip_jax.trainer import build

    config = load_config(f"{tiny_folder},runlocal")
    config.data.options.tokenizer = "bpe"
    with pytest.raises(ValueError, match="'bpe' tokenizer but the model was trained with the 'siglip' one"):
        build(config)
    with pytest.raises(ValueError, match="expected a SigLIP Hugging Face folder"):
        load_config(f"{tiny_folder},fast")
    clip = tmp_path / "clip"
    clip_jax.export_checkpoint(clip_jax.create_model("tiny-vit"), clip_jax.init_variables(
        clip_jax.create_model("tiny-vit")), str(clip), "hf")
    with pytest.raises(ValueError, match="fine-tunes the registered SigLIP ones"):
        load_config(str(clip))
