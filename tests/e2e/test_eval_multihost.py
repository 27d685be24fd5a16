"""Evaluation over 2 processes x 4 CPU devices (jax.distributed, gloo) gives what one
process gives: the same image and caption features in dataset order, and the same
zero-shot and linear-probe results, with dataset sizes that do not divide the global batch (padding
rows on every host, hosts with different numbers of real rows and captions) and the
feature cache shared by the hosts."""
import json
import os
import subprocess

import numpy as np
import pytest

from tests.helpers.evaluation import _png, class_image, folder_dataset
from tests.helpers.runtime import ROOT, free_port, worker


def _captioned_shards(directory: str, images: int = 13) -> str:
    """WebDataset shards whose images have 1, 2 or 3 captions."""
    from clip_jax.data.wds_writer import ShardWriter

    with ShardWriter(os.path.join(directory, "cap-"), samples_per_shard=5) as writer:
        for i in range(images):
            texts = [f"picture {i} caption {j} of kind {i % 4}" for j in range(i % 3 + 1)]
            writer.write(
                f"s{i:04d}", {"png": _png(class_image(i % 4, 300 + i)), "json": json.dumps({"captions": texts})}
            )
        return writer.spec()


def test_two_processes_match_one(tmp_path):
    # 21 images: per host 11 and 10, in batches of 4 (global 8): padding on both hosts;
    # 13 captioned images in batches of 3 (global 6: host 1 ends with a padding batch),
    # 25 captions in chunks of 4.
    images = folder_dataset(str(tmp_path / "images"), classes=3, per_class=7)
    captions = _captioned_shards(str(tmp_path / "captions"))
    import clip_jax

    model = clip_jax.create_model("tiny-vit")
    checkpoint = clip_jax.export_checkpoint(
        model, clip_jax.init_variables(model, 0), str(tmp_path / "tiny.safetensors"), "open_clip"
    )
    port = str(free_port())
    out = tmp_path / "hosts.npz"
    commands = [
        worker(
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--out",
            out,
            "--images",
            images,
            "--captions",
            captions,
            "--devices",
            "4",
            "--num_processes",
            "2",
            "--process_id",
            i,
            "--port",
            port,
            "--cache_dir",
            tmp_path / "cache",
        )
        for i in range(2)
    ]
    workers = [
        subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    try:
        for process in workers:
            _, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()

    from tests.workers.evaluate import evaluate

    arrays, metrics = evaluate(*clip_jax.load_checkpoint(str(checkpoint)), images, captions)  # 8 devices, one host
    hosts = np.load(out)
    assert int(hosts["processes"]) == 2 and int(hosts["devices"]) == 8
    assert hosts["images"].shape == (21, 64) and hosts["texts"].shape == (13, 3, 32)
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(hosts[key], value, atol=2e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(hosts[key], value, err_msg=key)
    host_metrics = json.loads(str(hosts["metrics"]))
    assert set(host_metrics) == set(metrics)
    for key, value in metrics.items():
        assert host_metrics[key] == pytest.approx(value, abs=1e-6), key
    assert metrics["eval/zs/examples"] == 21 and int(arrays["text_mask"].sum()) == 25
    assert len(os.listdir(tmp_path / "cache")) == 2  # written once for both hosts: post- and pre-projection
