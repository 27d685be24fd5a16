"""hf-hub:ORG/NAME and pretrained rows, downloaded from a loopback hub that serves
repositories written by open_clip and transformers: the features equal theirs, the cache
is used, downloads resume, and bad files, names and layouts are refused with errors that
say what to do.  (The same from the command lines, offline included:
tests/e2e/test_pretrained_commands.py.)"""
import os
import shutil

import jax
import numpy as np
import pytest

pytest.importorskip("open_clip")
pytest.importorskip("transformers")

import clip_jax  # noqa: E402
from clip_jax.preprocess import MEAN, STD  # noqa: E402
from clip_jax.pretrained import DownloadError, Preprocessing, Pretrained, Source, register  # noqa: E402
from clip_jax.pretrained.table import PRETRAINED  # noqa: E402
from tests.helpers.hub_repos import features, write_repos  # noqa: E402
from tests.helpers.hub_server import HubServer, point_hub_at, sha256_of  # noqa: E402
from tests.helpers.oracles import max_diff  # noqa: E402

TOLERANCE = 1e-5
CLIP_PREPROCESSING = Preprocessing(tuple(MEAN.tolist()), tuple(STD.tolist()))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    repos = write_repos(str(root / "written"))
    with HubServer(str(root / "served")) as server:
        for name, (folder, *_) in repos.items():
            if os.path.isdir(folder):
                server.add_repo(f"test/{name}", folder)
        junk = root / "junk"
        junk.mkdir()
        (junk / "README.md").write_text("# not a model\n")
        (junk / "notes.txt").write_text("nothing here\n")
        server.add_repo("test/junk", str(junk))
        server.repos = repos
        yield server
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def endpoint(hub, monkeypatch):
    """huggingface_hub pointed at the loopback hub, online."""
    from huggingface_hub import constants

    point_hub_at(monkeypatch, hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.log.clear()
    return hub


def go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def assert_features(hub, repo, model, variables):
    _, architecture, expected, (images, tokens) = hub.repos[repo]
    assert model.config == clip_jax.get_config(architecture)
    diffs = [max_diff(a, b) for a, b in zip(features(model, variables, images, tokens), expected)]
    print(f"{repo}: max |image diff| {diffs[0]:.1e}, |text diff| {diffs[1]:.1e}")
    assert max(diffs) <= TOLERANCE


@pytest.mark.parametrize("repo", ["open_clip", "hf-clip", "siglip", "npz"])
def test_every_layout_from_the_hub_equals_its_library(endpoint, repo, tmp_path):
    name = "tiny-siglip" if repo == "npz" else None  # an .npz holds no config; shapes do not show the heads
    model, variables = clip_jax.load_checkpoint(f"hf-hub:test/{repo}", name=name, cache_dir=str(tmp_path))
    assert_features(endpoint, repo, model, variables)
    fetched = {path.rsplit("/", 1)[-1] for _, path, _ in endpoint.gets()}
    if repo == "open_clip":  # open_clip's layout wins, and only its files come down
        assert fetched == {"open_clip_config.json", "open_clip_model.safetensors"}
    if repo == "hf-clip":
        assert fetched == {"config.json", "model.safetensors.index.json"} | {
            f for f in os.listdir(endpoint.repos[repo][0]) if f.startswith("model-")}
        assert len(fetched) > 3  # sharded
    if repo == "siglip":
        assert fetched == {"config.json", "model.safetensors", "spiece.model"}
        tokenizer = clip_jax.load_tokenizer(model, "hf-hub:test/siglip")  # the repository's own spiece.model
        assert tokenizer(["a photo of a cat"]).shape == (1, model.config.text.context_length)


def test_second_load_downloads_nothing_and_offline_reads_the_cache(endpoint, tmp_path, monkeypatch):
    first = clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))
    assert endpoint.gets()
    endpoint.log.clear()
    again = clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))
    assert endpoint.gets() == []  # metadata requests only
    go_offline(monkeypatch)
    endpoint.log.clear()
    offline = clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))
    assert endpoint.log == []
    for model, variables in (again, offline):
        assert_features(endpoint, "siglip", model, variables)
    assert first[0].config == offline[0].config
    with pytest.raises(DownloadError, match=r"HF_HUB_OFFLINE is set.*not in huggingface_hub's cache"):
        clip_jax.load_checkpoint("hf-hub:test/hf-clip", cache_dir=str(tmp_path))


def test_an_interrupted_hub_download_resumes(endpoint, tmp_path):
    from huggingface_hub import constants

    path = "/test/open_clip/resolve/main/open_clip_model.safetensors"
    chunk = constants.DOWNLOAD_CHUNK_SIZE  # huggingface_hub keeps what it received in whole chunks
    assert os.path.getsize(os.path.join(endpoint.repos["open_clip"][0], "open_clip_model.safetensors")) > chunk + 1000
    endpoint.cut_after(path, chunk + 1000)
    model, variables = clip_jax.load_checkpoint("hf-hub:test/open_clip", cache_dir=str(tmp_path))
    assert [r for _, _, r in endpoint.gets(path)] == ["", f"bytes={chunk}-"]
    assert_features(endpoint, "open_clip", model, variables)


def cached_blob(cache_dir, repo, filename):
    snapshots = os.path.join(cache_dir, "hub", f"models--test--{repo}", "snapshots")
    (commit,) = os.listdir(snapshots)
    return os.path.realpath(os.path.join(snapshots, commit, filename))


def corrupt(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\x00corrupt\x00")


def test_a_corrupt_cached_file_is_downloaded_again_or_refused_offline(endpoint, tmp_path, monkeypatch):
    clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))
    blob = cached_blob(str(tmp_path), "siglip", "model.safetensors")
    corrupt(blob)
    go_offline(monkeypatch)
    with pytest.raises(DownloadError, match=rf"corrupt.*{blob}.*delete"):
        clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))
    monkeypatch.setattr(__import__("huggingface_hub").constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    endpoint.log.clear()
    model, variables = clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))
    assert [p for _, p, _ in endpoint.gets()] == ["/test/siglip/resolve/main/model.safetensors"]
    assert_features(endpoint, "siglip", model, variables)


def test_hub_errors_name_what_was_found_and_what_is_read(endpoint, tmp_path):
    with pytest.raises(ValueError, match=r"no layout clip_jax reads.*'README.md', 'notes.txt'.*open_clip hub layout"
                                         r".*Hugging Face CLIPModel / SiglipModel folder.*big_vision"):
        clip_jax.load_checkpoint("hf-hub:test/junk", cache_dir=str(tmp_path))
    with pytest.raises(DownloadError, match=r"test/missing.*RepositoryNotFoundError"):
        clip_jax.load_checkpoint("hf-hub:test/missing", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"no file 'nope.npz'.*siglip_tiny.npz"):
        clip_jax.load_checkpoint("hf-hub:test/npz/nope.npz", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"write hf-hub:ORG/NAME"):
        clip_jax.load_checkpoint("hf-hub:no-slash", cache_dir=str(tmp_path))


def test_hub_unreachable_and_not_cached_says_how_to_load_offline(endpoint, tmp_path, monkeypatch):
    point_hub_at(monkeypatch, "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(DownloadError, match=r"could not be reached.*not in huggingface_hub's cache.*HF_HUB_OFFLINE=1"):
        clip_jax.load_checkpoint("hf-hub:test/siglip", cache_dir=str(tmp_path))


# -- pretrained rows: by name, from a URL with its SHA-256 or from a hub repository --------


@pytest.fixture
def rows(endpoint):
    """Rows of this test's own, removed afterwards."""
    added = []

    def add(**fields):
        row = register(Pretrained(architecture="tiny-vit", act="quick_gelu", preprocessing=CLIP_PREPROCESSING,
                                  **fields))
        added.append((row.model, row.tag))
        return row

    yield add
    for key in added:
        PRETRAINED.pop(key, None)


def test_a_url_row_is_checked_cached_and_resumed(endpoint, rows, tmp_path):
    plain = endpoint.repos["plain.pt"][0]
    url = endpoint.add_file(plain)
    rows(model="tiny-url", tag="test", source=Source(url=url, sha256=sha256_of(plain)))
    endpoint.cut_after("/files/plain.pt", 50_000)
    model, variables = clip_jax.load_pretrained("tiny-url", "test", cache_dir=str(tmp_path))
    assert [r for _, _, r in endpoint.gets("/files/plain.pt")] == ["", "bytes=50000-"]
    assert_features(endpoint, "plain.pt", model, variables)
    endpoint.log.clear()
    clip_jax.load_pretrained("tiny-url", cache_dir=str(tmp_path))  # one tag: none needed; cached
    assert endpoint.gets() == []
    cached = os.path.join(str(tmp_path), sha256_of(plain), "plain.pt")
    corrupt(cached)
    model, variables = clip_jax.load_pretrained("tiny-url", cache_dir=str(tmp_path))  # detected, fetched again
    assert len(endpoint.gets("/files/plain.pt")) == 1
    assert_features(endpoint, "plain.pt", model, variables)


def test_a_file_whose_sha256_differs_is_refused_and_not_cached(endpoint, rows, tmp_path):
    url = endpoint.add_file(endpoint.repos["plain.pt"][0])
    rows(model="tiny-url", tag="tampered", source=Source(url=url, sha256="0" * 64))
    with pytest.raises(DownloadError, match=r"SHA-256 is [0-9a-f]{64}, expected 0{64}; refused and not cached"):
        clip_jax.load_pretrained("tiny-url", "tampered", cache_dir=str(tmp_path))
    assert os.listdir(os.path.join(str(tmp_path), "0" * 64)) == []


def test_a_row_with_both_sources_falls_back_to_its_url(endpoint, rows, tmp_path):
    """OpenAI's rows: the hub first, the URL (SHA-256 checked) when the hub does not answer."""
    plain = endpoint.repos["plain.pt"][0]
    url = endpoint.add_file(plain)
    rows(model="tiny-both", tag="test", source=Source(hf_hub="test/gone", files=("open_clip_model.safetensors",),
                                                      url=url, sha256=sha256_of(plain)))
    model, variables = clip_jax.load_pretrained("tiny-both", "test", cache_dir=str(tmp_path))
    assert_features(endpoint, "plain.pt", model, variables)
    assert [p for _, p, _ in endpoint.gets()] == ["/files/plain.pt"]
    rows(model="tiny-both", tag="broken", source=Source(hf_hub="test/gone", files=("x.bin",), url=url + "-gone",
                                                        sha256=sha256_of(plain)))
    with pytest.raises(DownloadError, match=r"tiny-both:broken: neither source answered. Hub: .*test/gone.*URL: .*404"):
        clip_jax.load_pretrained("tiny-both", "broken", cache_dir=str(tmp_path))


def test_a_hub_row_reads_its_weight_file_with_its_architecture(endpoint, rows, tmp_path):
    rows(model="tiny-hub", tag="test", source=Source(hf_hub="test/open_clip", files=("open_clip_model.safetensors",)))
    model, variables = clip_jax.load_checkpoint("tiny-hub:test", cache_dir=str(tmp_path))  # the NAME:TAG spelling
    assert_features(endpoint, "open_clip", model, variables)
    assert [p.rsplit("/", 1)[-1] for _, p, _ in endpoint.gets()] == ["open_clip_model.safetensors"]


def test_load_pretrained_onto_a_mesh_shards_each_tensor(endpoint, tmp_path):
    from clip_jax.convert.placement import variable_shardings
    from clip_jax.sharding import make_mesh

    mesh = make_mesh([("data", 2), ("fsdp", 4)])
    plain = clip_jax.load_pretrained("hf-hub:test/hf-clip", cache_dir=str(tmp_path))[1]
    model, sharded = clip_jax.load_pretrained("hf-hub:test/hf-clip", cache_dir=str(tmp_path), mesh=mesh)
    shardings = variable_shardings(model.config, mesh)
    split = 0
    for (path, leaf), want, host in zip(jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(shardings),
                                        jax.tree.leaves(plain)):
        assert isinstance(leaf, jax.Array) and leaf.sharding == want, path
        split += leaf.sharding.spec != jax.sharding.PartitionSpec()
        np.testing.assert_array_equal(np.asarray(leaf), host)
    assert split > 0  # the large tensors are split over fsdp, not copied whole to every device
    assert_features(endpoint, "hf-clip", model, sharded)


def test_hf_hub_names_take_no_tag(endpoint):
    with pytest.raises(ValueError, match=r"takes no tag"):
        clip_jax.load_pretrained("hf-hub:test/siglip", "webli")
