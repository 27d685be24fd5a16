"""Bad input to the checkpoint readers and the public API gets clear errors."""
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import clip_jax
from clip_jax.convert import CheckpointFormatError
from clip_jax.convert.safetensors_io import save_safetensors
from clip_jax.convert.table import variables_to_state_dict


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = clip_jax.create_model("tiny-vit")
    variables = clip_jax.init_variables(model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    clip_jax.export_checkpoint(model, variables, str(path), "open_clip")
    return model, variables, str(path)


def test_unknown_model_name_lists_available():
    with pytest.raises(ValueError, match="ViT-B/32.*") as info:
        clip_jax.create_model("ViT-Q-99")
    assert "ViT-Q-99" in str(info.value) and "RN50x64" in str(info.value)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        clip_jax.load_checkpoint("nope.pt")


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", bytes(range(256)) * 10])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="junk.pt"):
        clip_jax.load_checkpoint(str(path))


def test_plain_pickle_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointFormatError, match="legacy.pt"):
        clip_jax.load_checkpoint(str(path))


def test_crafted_pickle_does_not_run_code(tmp_path):
    """A torch-style archive whose pickle calls os.system: read as inert data."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state_dict": Exploit()}, protocol=2))
        archive.writestr("archive/version", "3\n")
    path = tmp_path / "evil.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointFormatError, match="no tensors"):
        clip_jax.load_checkpoint(str(path))
    assert not marker.exists()


def test_truncated_safetensors(tmp_path, tiny):
    _, _, good = tiny
    data = open(good, "rb").read()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        clip_jax.load_checkpoint(str(path))


def test_truncated_torch_archive(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(CheckpointFormatError, match="cut.pt"):
        clip_jax.load_checkpoint(str(path))


def test_tensors_that_fit_no_architecture(tmp_path, tiny):
    model, variables, _ = tiny
    sd = variables_to_state_dict(variables, model.config)
    sd.pop("visual.ln_post.weight")
    sd["visual.extra"] = np.zeros((3, 4), np.float32)
    sd["visual.proj"] = np.zeros((5, 7), np.float32)
    path = tmp_path / "bad.safetensors"
    save_safetensors(str(path), sd)
    with pytest.raises(ValueError) as info:
        clip_jax.load_checkpoint(str(path), name="tiny-vit")
    message = str(info.value)
    assert "missing keys (1): visual.ln_post.weight (64,)" in message
    assert "visual.extra (3, 4)" in message
    assert "visual.proj (5, 7) != (64, 32)" in message


def test_name_overrides_inference_and_must_fit(tiny):
    _, _, path = tiny
    model, _ = clip_jax.load_checkpoint(path)
    assert clip_jax.models.name_of(model.config) == "tiny-vit"
    with pytest.raises(ValueError, match="does not fit"):
        clip_jax.load_checkpoint(path, name="ViT-B/32")


def test_image_and_token_layout_errors(tiny):
    model, variables, _ = tiny
    with pytest.raises(ValueError, match="NCHW"):
        clip_jax.encode_image(model, variables, np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="rank 3"):
        clip_jax.encode_image(model, variables, np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="dtype uint8"):
        clip_jax.encode_image(model, variables, np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[batch, 77\]"):
        clip_jax.encode_text(model, variables, np.zeros((1, 80), np.int32))
    with pytest.raises(ValueError, match="dtype float32"):
        clip_jax.encode_text(model, variables, np.zeros((1, 77), np.float32))


def test_unknown_export_format(tmp_path, tiny):
    model, variables, _ = tiny
    with pytest.raises(ValueError, match="open_clip"):
        clip_jax.export_checkpoint(model, variables, str(tmp_path / "x"), "onnx")


def test_convert_command_line(tmp_path, tiny):
    _, _, path = tiny
    out = tmp_path / "native.safetensors"
    done = subprocess.run([sys.executable, "-m", "clip_jax.convert", path, str(out), "--to", "clip_jax"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tiny-vit" in done.stdout
    model, _ = clip_jax.load_checkpoint(str(out))
    assert model.config == clip_jax.get_config("tiny-vit")
    bad = subprocess.run([sys.executable, "-m", "clip_jax.convert", str(tmp_path / "missing.pt"), str(out),
                          "--to", "hf"], capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.pt" in bad.stderr
