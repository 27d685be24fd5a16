"""python -m clip_jax.search: index, query, classify and info as a user runs them, resume
after a SIGKILL in the middle of indexing, and errors that name the problem."""
import csv
import json
import os
import signal
import sqlite3
import subprocess

import numpy as np
import pytest
from PIL import Image

from clip_jax.search import Index
from clip_jax.search.cli import main
from tests.helpers.runtime import ROOT, worker
from tests.helpers.search import CLASSES, corrupt_files, random_checkpoint, shapes_folder, trained_checkpoint


@pytest.fixture(scope="module")
def checkpoint():
    return trained_checkpoint()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, checkpoint):
    base = tmp_path_factory.mktemp("cli")
    root = str(base / "photos")
    labels = shapes_folder(root, per_class=10, seed=2)
    corrupt_files(root, os.path.join(root, next(p for p in labels if p.endswith(".jpg"))))
    assert main(["index", root, "--checkpoint", checkpoint, "--index", str(base / "index"), "--no-progress",
                 "--batch-size", "16", "--chunk-size", "50"]) == 0
    return str(base / "index"), root, labels


def test_index_prints_a_summary_with_skipped_files(indexed, checkpoint, capsys):
    index, root, labels = indexed
    assert main(["index", root, "--index", index, "--no-progress"]) == 0  # rerun: the recorded checkpoint
    out = capsys.readouterr().out
    assert f"{len(labels)} images indexed" in out and "0 embedded" in out and "3 skipped" in out
    assert "broken/empty.jpg: empty file" in out


def test_query_text_json_and_sheet(indexed, tmp_path, capsys):
    index, root, labels = indexed
    sheet = tmp_path / "hits.jpg"
    assert main(["query", index, "a yellow circle", "-k", "5", "--json", "--sheet", str(sheet)]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert labels[hits[0]["path"]] == "yellow circle"
    assert hits[0]["file"] == os.path.join(root, hits[0]["path"])
    with Image.open(sheet) as image:
        assert image.width > 5 * 100 or image.height > 2 * 100

    assert main(["query", index, "a green square", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1"
    assert labels[os.path.relpath(lines[0].split()[2], root)] == "green square"

    assert main(["query", index, "red square", "--templates", "a {}", "-k", "1", "--json"]) == 0
    assert labels[json.loads(capsys.readouterr().out)[0]["path"]] == "red square"


def test_query_by_image_plus_text(indexed, capsys):
    index, root, labels = indexed
    target = sorted(p for p, label in labels.items() if label == "blue triangle")[0]
    assert main(["query", index, "--image", os.path.join(root, target), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == target
    assert main(["query", index, "--image", os.path.join(root, target), "--plus", "a blue triangle", "--json"]) == 0
    assert labels[json.loads(capsys.readouterr().out)[0]["path"]] == "blue triangle"


def test_classify_writes_a_csv(indexed, tmp_path, capsys):
    index, root, labels = indexed
    out = tmp_path / "labels.csv"
    names = ",".join(f"a {label}" for label in CLASSES)
    assert main(["classify", index, "--labels", names, "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(labels) and set(rows[0]) == {"path", "label", "score"}
    correct = np.mean([row["label"] == f"a {labels[row['path']]}" for row in rows])
    assert correct >= 0.85, correct
    assert f"{len(labels)} images labelled" in capsys.readouterr().err


def test_info_lists_the_index(indexed, capsys):
    index, root, labels = indexed
    assert main(["info", index, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == len(labels) and info["root"] == root and info["model"] == "tiny-vit"
    assert set(info["skipped_files"]) == {"broken/empty.jpg", "broken/truncated.jpg", "broken/text.jpg"}


def test_errors_exit_2_with_one_line(indexed, tmp_path, capsys):
    index, root, _ = indexed
    other = random_checkpoint(str(tmp_path), seed=3)
    assert main(["query", index, "a cat", "--checkpoint", other]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot be mixed" in err and other in err
    assert main(["index", str(tmp_path / "nowhere"), "--index", str(tmp_path / "i"), "--checkpoint", other]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["query", index]) == 2
    assert "give a query text" in capsys.readouterr().err
    assert main(["query", index, "x", "--image", str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["classify", index, "--labels", " , "]) == 2
    assert "no labels" in capsys.readouterr().err


def _features_files(index):
    folder = os.path.join(index, "features")
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


@pytest.mark.parametrize("moment", ["after-commit", "before-commit"])
def test_resume_after_sigkill(tmp_path, checkpoint, moment):
    """Killed mid-index, the index is valid; the rerun embeds only what was not committed and
    leaves the committed chunks untouched."""
    root = str(tmp_path / "photos")
    labels = shapes_folder(root, per_class=10, seed=4)  # 120 images: 6 chunks of 20
    index = str(tmp_path / "index")
    args = ["index", root, "--checkpoint", checkpoint, "--index", index, "--no-progress", "--chunk-size", "20",
            "--batch-size", "8"]
    env = {**os.environ, "XLA_FLAGS": ""}
    killed = subprocess.run(worker("search_kill", moment, "3", *args), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    committed = 3 if moment == "after-commit" else 2
    db = sqlite3.connect(os.path.join(index, "images.sqlite"))
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == committed * 20
    db.close()
    with Index.open(index) as partial:  # valid as it is: searchable
        assert len(partial) == committed * 20 and len(partial.search("a red circle", k=3)) == 3
    files_before = _features_files(index)
    assert len(files_before) == 3  # the killed chunk's file is there, not yet referenced, before the rerun

    assert main(args) == 0
    with Index.open(index) as done:
        assert sorted(done.paths) == sorted(labels)
        report = done.report()
        assert report["embedded"] == len(labels) - committed * 20
        assert report["unchanged"] == committed * 20
        files_after = _features_files(index)
        assert len(files_after) == 6
        for name in sorted(files_before)[:committed]:  # committed chunks: not rewritten
            assert files_after[name] == files_before[name]
        top = done.search("a green circle", k=1)[0]
        assert labels[top.path] == "green circle"
