"""python -m clip_jax.search serve: a real server in a subprocess on a free loopback port,
queried over HTTP (search, thumbnails, originals, path traversal, limits), and its page
loaded in headless Chromium (a screenshot and the hit thumbnails in the DOM)."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from clip_jax.search import Index
from tests.helpers.runtime import ROOT
from tests.helpers.search import corrupt_files, shapes_folder, trained_checkpoint

SECRET = "top secret, never to be served"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 60) -> tuple[int, bytes, str]:
    """(status, body, content type) of GET path, sent exactly as written (no normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root = base / "photos"
    labels = shapes_folder(str(root), per_class=6, seed=8)
    corrupt_files(str(root), str(root / next(p for p in labels if p.endswith(".jpg"))))
    (base / "secret.txt").write_text(SECRET)
    (root / "notes.jpg.txt").write_text(SECRET)
    os.symlink(base / "secret.txt", root / "link.jpg")
    index = str(base / "index")
    Index.build(str(root), index, trained_checkpoint(), progress=False).close()
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": ROOT}
    log = open(base / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "clip_jax.search", "serve", index, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.time() + 180
        while True:
            assert process.poll() is None, (base / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "the server did not answer within 180 s"
            try:
                if get(port, "/info", timeout=5)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield {"port": port, "root": str(root), "labels": labels, "index": index, "base": base}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def search(server, **params):
    status, body, kind = get(server["port"], "/search?" + urllib.parse.urlencode(params))
    assert kind.startswith("application/json")
    return status, json.loads(body)


def test_info(server):
    status, body, _ = get(server["port"], "/info")
    info = json.loads(body)
    assert status == 200 and info["images"] == len(server["labels"]) and info["skipped"] == 3
    assert info["model"] == "tiny-vit"


def test_search_by_text_then_by_a_hit(server):
    status, result = search(server, q="a red circle", k=5)
    assert status == 200 and result["count"] == 5
    hits = result["hits"]
    assert server["labels"][hits[0]["path"]] == "red circle"
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    status, by_image = search(server, id=hits[1]["id"], k=3)
    assert status == 200 and by_image["hits"][0]["id"] == hits[1]["id"]
    assert by_image["hits"][0]["score"] == pytest.approx(1.0, abs=2e-3)
    status, plus = search(server, id=hits[1]["id"], plus="a red circle", k=3)
    assert status == 200 and plus["count"] == 3

    # The original file, byte for byte.
    status, data, _ = get(server["port"], hits[0]["image"])
    with open(os.path.join(server["root"], hits[0]["path"]), "rb") as f:
        assert status == 200 and data == f.read()


def test_thumbnails_are_made_once(server):
    _, result = search(server, q="a blue square", k=2)
    hit = result["hits"][0]
    status, data, kind = get(server["port"], hit["thumb"])
    assert status == 200 and kind == "image/jpeg"
    cached = os.path.join(server["index"], "thumbs", f"{hit['id']}.jpg")
    made = os.stat(cached).st_mtime_ns
    with open(cached, "rb") as f:
        assert f.read() == data
    time.sleep(0.05)
    status, again, _ = get(server["port"], hit["thumb"])
    assert status == 200 and again == data and os.stat(cached).st_mtime_ns == made
    assert get(server["port"], "/thumb/987654")[0] == 404


@pytest.mark.parametrize("path", [
    "/image/../../secret.txt",
    "/image/../secret.txt",
    "/image/%2e%2e/secret.txt",
    "/image/..%2fsecret.txt",
    "/image/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/image//etc/passwd",
    "/image/%2fetc%2fpasswd",
    "/image/link.jpg",              # a symlink inside the folder to a file outside it
    "/image/notes.jpg.txt",         # inside the folder, not an indexed image
    "/image/broken/text.jpg",       # inside the folder, skipped as unreadable
    "/image/red/../../secret.txt",
    "/thumb/../index/manifest.json",
    "/../secret.txt",
    "/thumb/-1",
])
def test_nothing_outside_the_index_is_served(server, path):
    status, body, _ = get(server["port"], path)
    assert status in (403, 404), (path, status)
    assert SECRET.encode() not in body and b"root:" not in body


def test_traversal_is_403(server):
    assert get(server["port"], "/image/../../secret.txt")[0] == 403
    assert get(server["port"], "/image/link.jpg")[0] == 403
    assert get(server["port"], "/image/notes.jpg.txt")[0] == 404


@pytest.mark.parametrize("params, message", [
    ({"q": "x" * 501}, "at most 500"),
    ({"q": "a cat", "k": 0}, "between 1 and"),
    ({"q": "a cat", "k": 100000}, "between 1 and"),
    ({"q": "a cat", "k": "many"}, "whole number"),
    ({}, "nothing to search for"),
    ({"id": "abc"}, "not an image id"),
    ({"id": 987654}, "no image with id"),
    ({"q": "a cat", "method": "guess"}, "method"),
])
def test_bad_queries_are_400(server, params, message):
    status, result = search(server, **params)
    assert status == 400 and message in result["error"]


def test_page_escapes_the_query(server):
    status, body, kind = get(server["port"], "/?q=" + urllib.parse.quote("<script>alert(1)</script>") + "&k=3")
    page = body.decode()
    assert status == 200 and kind.startswith("text/html")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count('class="thumb"') == 3


def _chromium(*args, timeout=120):
    profile = args[0]
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
def test_page_in_headless_chromium(server, tmp_path):
    url = f"http://127.0.0.1:{server['port']}/?q=" + urllib.parse.quote("a red circle") + "&k=6"
    dom = _chromium(str(tmp_path / "profile"), "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    thumbs = [part.split('"')[0] for part in dom.stdout.split('class="thumb" src="')[1:]]
    assert len(thumbs) == 6 and all(src.startswith("/thumb/") for src in thumbs)
    first_alt = dom.stdout.split('alt="')[1].split('"')[0]
    assert server["labels"][first_alt] == "red circle"
    assert 'name="q" value="a red circle"' in dom.stdout

    screenshot = tmp_path / "search.png"
    shot = _chromium(str(tmp_path / "profile"), "--window-size=1200,800", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1200, 800)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # The thumbnails were loaded and drawn: the red of the shapes covers part of the page.
    red = (np.abs(pixels - np.array([220, 40, 40])).sum(-1) < 60).mean()
    assert red > 0.01, red
