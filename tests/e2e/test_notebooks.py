"""The notebooks run end to end on CPU with tiny settings.

papermill executes each notebook with the cell tagged `parameters` overridden.  The
kernel is this interpreter (a kernel spec written for the test names sys.executable), so
the notebooks see exactly the packages the tests see.  The kernel inherits the
environment: the training notebook gets 8 simulated CPU devices (as a TPU host has 8
cores) so its mesh has a real fsdp axis; the zero-shot notebook gets one device, as on a
laptop.
"""
import json
import os
import sys

import nbformat
import numpy as np
import papermill
import pytest

from tests.helpers.runtime import ROOT

NOTEBOOKS = os.path.join(ROOT, "notebooks")
KERNEL = "clip_jax_tests"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec that starts this Python, found first through JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "clip_jax tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return KERNEL


def execute(name, output, kernel, **parameters):
    papermill.execute_notebook(os.path.join(NOTEBOOKS, name), str(output), parameters=parameters,
                               kernel_name=kernel, cwd=NOTEBOOKS, progress_bar=False, execution_timeout=600)
    return nbformat.read(str(output), as_version=4)


def outputs(notebook, kind):
    """Text printed (kind="text") or PNG figures shown (kind="image/png") by the notebook."""
    found = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if kind == "text" and out.get("output_type") == "stream":
                found.append(out["text"])
            elif kind != "text" and kind in out.get("data", {}):
                found.append(out["data"][kind])
    return "".join(found) if kind == "text" else found


@pytest.mark.parametrize("name", ["zero_shot.ipynb", "train_tpu.ipynb"])
def test_stored_notebook_is_clean_and_parameterised(name):
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nbformat.validate(notebook)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in notebook.cells if c.cell_type == "code"), "commit notebooks without outputs"
    sources = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "import torch" not in sources  # torch after tensorflow segfaults with these wheels


def test_zero_shot_notebook(tmp_path, kernel, monkeypatch):
    import clip_jax

    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device, as on a laptop
    model = clip_jax.create_model("tiny-vit")
    checkpoint = clip_jax.export_checkpoint(model, clip_jax.init_variables(model),
                                            str(tmp_path / "tiny.safetensors"), "open_clip")
    notebook = execute("zero_shot.ipynb", tmp_path / "out.ipynb", kernel, checkpoint=checkpoint,
                       num_images=4, num_eval_images=20, search_images=8, top_k=3)
    text = outputs(notebook, "text")
    assert "18 classes x 5 templates encoded" in text
    assert "ensemble of all 5" in text
    assert "9 images indexed and 4 queries searched" in text  # 8 synthetic + the photo
    assert len(outputs(notebook, "image/png")) == 2  # predictions, search hits


def test_zero_shot_notebook_with_a_siglip_model_from_the_hub(tmp_path, kernel, monkeypatch):
    """The same notebook from its one-line `load_pretrained`, on a SigLIP repository served
    by a loopback hub (HF_ENDPOINT): its SentencePiece tokenizer downloaded with it,
    SigLIP's preprocessing and sigmoid probabilities."""
    import shutil

    import clip_jax
    from tests.helpers.hub_server import HubServer
    from tests.helpers.siglip import train_sentencepiece

    monkeypatch.setenv("XLA_FLAGS", "")
    model = clip_jax.create_model("tiny-siglip")
    folder = tmp_path / "siglip"
    clip_jax.export_checkpoint(model, clip_jax.init_variables(model), str(folder), "hf")
    shutil.copy(train_sentencepiece(tmp_path, "siglip"), folder / "spiece.model")
    with HubServer(str(tmp_path / "hub")) as hub:
        hub.add_repo("test/tiny-siglip", str(folder))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the kernel inherits the environment
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        notebook = execute("zero_shot.ipynb", tmp_path / "out.ipynb", kernel, pretrained="hf-hub:test/tiny-siglip",
                           tag="", num_images=4, num_eval_images=20, search_images=8, top_k=3)
        assert {path.rsplit("/", 1)[-1] for _, path, _ in hub.gets()} == {"config.json", "model.safetensors",
                                                                        "spiece.model"}
    text = outputs(notebook, "text")
    assert "hf-hub:test/tiny-siglip: siglip model, ViT image tower, 32 px input" in text
    assert "18 classes x 5 templates encoded" in text and "sigmoid per class" in text
    assert "9 images indexed and 4 queries searched" in text
    assert len(outputs(notebook, "image/png")) == 2


def test_train_tpu_notebook(tmp_path, kernel, monkeypatch):
    import clip_jax

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    workdir = tmp_path / "run"
    export = tmp_path / "model.safetensors"
    notebook = execute("train_tpu.ipynb", tmp_path / "out.ipynb", kernel, workdir=str(workdir), total_steps=20,
                       batch_size=32, mesh=[["data", -1], ["fsdp", 2]], eval_examples=100, export_path=str(export))
    text = outputs(notebook, "text")
    assert "8 devices in 1 process" in text and "mesh axes: {'data': 4, 'fsdp': 2}" in text
    assert "trained to step 20" in text
    assert "reloaded: same architecture" in text
    assert len(outputs(notebook, "image/png")) == 2  # metrics, held-out predictions

    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 21))
    assert records[-1]["eval/heldout_zeroshot/examples"] == 100
    model, variables = clip_jax.load_checkpoint(str(export))
    trained, trained_variables = clip_jax.load_checkpoint(str(workdir))
    assert model.config == trained.config
    np.testing.assert_array_equal(variables["params"]["logit_scale"], trained_variables["params"]["logit_scale"])
