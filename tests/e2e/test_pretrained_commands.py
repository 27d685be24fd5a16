"""The command lines with hub checkpoints, as users run them: HF_ENDPOINT pointing at a
loopback hub that serves repositories written by open_clip and transformers, HF_HOME a
fresh cache.  python -m clip_jax.convert (online, then offline from the cache, then
offline without it), eval.py and python -m clip_jax.search on a SigLIP repository (its
tokenizer comes with it), and train.py starting from a hub checkpoint on an FSDP mesh."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("open_clip")
pytest.importorskip("transformers")

import clip_jax  # noqa: E402
from tests.helpers.hub_repos import features, write_repos  # noqa: E402
from tests.helpers.hub_server import HubServer  # noqa: E402
from tests.helpers.oracles import max_diff  # noqa: E402
from tests.helpers.runtime import ROOT  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    repos = write_repos(str(root / "written"))
    with HubServer(str(root / "served")) as server:
        for name in ("open_clip", "siglip", "hf-clip"):
            server.add_repo(f"test/{name}", repos[name][0])
        server.repos, server.home = repos, str(root / "hf_home")
        yield server
    shutil.rmtree(root, ignore_errors=True)


def run(hub, *args, devices=1, offline=False, timeout=600):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}" if devices > 1 else "",
           "HF_HOME": hub.home, "HF_ENDPOINT": "http://127.0.0.1:9" if offline else hub.url}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def assert_same_features(hub, repo, path):
    model, variables = clip_jax.load_checkpoint(str(path))
    _, _, expected, (images, tokens) = hub.repos[repo]
    assert max(max_diff(a, b) for a, b in zip(features(model, variables, images, tokens), expected)) <= 1e-5


def test_convert_from_the_hub_then_offline_from_the_cache(hub, tmp_path):
    done = run(hub, "-m", "clip_jax.convert", "hf-hub:test/open_clip", str(tmp_path / "a.safetensors"), "--to",
               "clip_jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_features(hub, "open_clip", tmp_path / "a.safetensors")
    done = run(hub, "-m", "clip_jax.convert", "hf-hub:test/open_clip", str(tmp_path / "b.safetensors"), "--to",
               "clip_jax", offline=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_features(hub, "open_clip", tmp_path / "b.safetensors")
    done = run(hub, "-m", "clip_jax.convert", "hf-hub:test/hf-clip", str(tmp_path / "c.safetensors"), "--to",
               "clip_jax", offline=True)
    assert done.returncode == 2
    assert "HF_HUB_OFFLINE is set" in done.stderr and "not in huggingface_hub's cache" in done.stderr
    assert not os.path.exists(tmp_path / "c.safetensors")


def test_eval_and_search_take_a_hub_siglip_checkpoint(hub, tmp_path):
    output = tmp_path / "r.json"
    done = run(hub, "eval.py", "--checkpoint", "hf-hub:test/siglip", "--data", "demo:heldout", "--templates", "{}",
               "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert 0 <= json.load(open(output))["metrics"]["top1"] <= 1
    photos = tmp_path / "photos"
    photos.mkdir()
    rs = np.random.RandomState(0)
    from PIL import Image

    for i in range(3):
        Image.fromarray(rs.randint(0, 256, (40 + i, 50, 3), np.uint8)).save(photos / f"{i}.png")
    index = tmp_path / "index"
    done = run(hub, "-m", "clip_jax.search", "index", str(photos), "--index", str(index), "--checkpoint",
               "hf-hub:test/siglip")
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(hub, "-m", "clip_jax.search", "query", str(index), "a red circle", "-k", "2", "--json")
    assert done.returncode == 0, done.stderr[-3000:]  # reopened from the spec the index recorded
    assert len(json.loads(done.stdout)) == 2


def test_train_starts_from_a_hub_checkpoint_on_an_fsdp_mesh(hub, tmp_path):
    workdir = tmp_path / "run"
    done = run(hub, "train.py", "--config", "configs/demo.py:runlocal", "--workdir", str(workdir),
               "--config.init_from=hf-hub:test/open_clip", "--config.total_steps=1", "--config.optim.lr=0.0",
               "--config.mesh=(('data', 2), ('fsdp', 4))", devices=8)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_features(hub, "open_clip", workdir)  # lr 0: the weights it started from, saved
