"""A loopback stand-in for the Hugging Face hub and for plain file URLs.

It answers the requests huggingface_hub makes when HF_ENDPOINT points at it:
  GET  /api/models/ORG/NAME[/revision/REV]      the repository's commit and file list
  HEAD /ORG/NAME/resolve/REV/FILE               commit, ETag (the file's SHA-256, as for LFS files), size
  GET  /ORG/NAME/resolve/REV/FILE               the bytes, honouring Range (resumed downloads)
and serves any other file under /files/NAME (OpenAI-style .pt URLs).  Repositories are
folders the test writes (`add_repo`).  Every request is logged; `cut_after(path, n)` makes
the next GET of a path send n bytes and drop the connection.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import threading


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class HubServer:
    def __init__(self, root: str):
        self.root = root
        self.repos_dir = os.path.join(root, "repos")
        self.files_dir = os.path.join(root, "files")
        os.makedirs(self.repos_dir, exist_ok=True)
        os.makedirs(self.files_dir, exist_ok=True)
        self.log: list[tuple[str, str, str]] = []  # (method, path, Range header)
        self.cuts: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                server._answer(self, body=False)

            def do_GET(self):
                server._answer(self, body=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- content -------------------------------------------------------------------------

    def add_repo(self, repo_id: str, folder: str) -> None:
        """Serve the files of `folder` as repository `repo_id` (copied)."""
        target = os.path.join(self.repos_dir, repo_id)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)

    def add_file(self, path: str) -> str:
        """Serve a file at a plain URL; returns the URL."""
        shutil.copy(path, os.path.join(self.files_dir, os.path.basename(path)))
        return f"{self.url}/files/{os.path.basename(path)}"

    def cut_after(self, path: str, nbytes: int) -> None:
        self.cuts[path] = nbytes

    def gets(self, pattern: str = "") -> list[tuple[str, str, str]]:
        """Logged GETs of file bytes (not API calls) whose path contains `pattern`."""
        return [entry for entry in self.log
                if entry[0] == "GET" and "/api/" not in entry[1] and pattern in entry[1]]

    def _commit(self, repo_dir: str) -> str:
        digest = hashlib.sha1()
        for name in sorted(self._files(repo_dir)):
            digest.update(name.encode() + os.path.getsize(os.path.join(repo_dir, name)).to_bytes(8, "little"))
        return digest.hexdigest()

    @staticmethod
    def _files(repo_dir: str) -> list[str]:
        return [os.path.relpath(os.path.join(d, f), repo_dir).replace(os.sep, "/")
                for d, _, names in os.walk(repo_dir) for f in names]

    # -- answers -------------------------------------------------------------------------

    def _answer(self, handler, body: bool) -> None:
        path = handler.path.split("?")[0]
        with self._lock:
            self.log.append((handler.command, path, handler.headers.get("Range", "")))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if api:
            repo_dir = os.path.join(self.repos_dir, api.group(1))
            if not os.path.isdir(repo_dir):
                return self._send(handler, 404, b'{"error": "Repository not found"}', body,
                                  {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"})
            info = {"id": api.group(1), "modelId": api.group(1), "sha": self._commit(repo_dir), "private": False,
                    "siblings": [{"rfilename": f} for f in sorted(self._files(repo_dir))]}
            return self._send(handler, 200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})
        if resolve:
            repo_dir = os.path.join(self.repos_dir, resolve.group(1))
            file = os.path.join(repo_dir, resolve.group(3))
            if not os.path.isdir(repo_dir):
                return self._send(handler, 404, b"", body, {"X-Error-Code": "RepoNotFound"})
            if not os.path.isfile(file):
                return self._send(handler, 404, b"", body, {"X-Error-Code": "EntryNotFound"})
            return self._send_file(handler, path, file, body, {"X-Repo-Commit": self._commit(repo_dir)})
        plain = re.fullmatch(r"/files/([^/]+)", path)
        if plain and os.path.isfile(os.path.join(self.files_dir, plain.group(1))):
            return self._send_file(handler, path, os.path.join(self.files_dir, plain.group(1)), body, {})
        return self._send(handler, 404, b"not found", body, {})

    def _send(self, handler, status: int, data: bytes, body: bool, headers: dict) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _send_file(self, handler, path: str, file: str, body: bool, headers: dict) -> None:
        size = os.path.getsize(file)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        status = 200
        if match and int(match.group(1)) < size:
            start, status = int(match.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        handler.send_response(status)
        for key, value in {**headers, "ETag": f'"{sha256_of(file)}"', "Accept-Ranges": "bytes",
                           "Content-Length": str(size - start)}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not body:
            return
        with open(file, "rb") as f:
            f.seek(start)
            data = f.read()
        cut = self.cuts.pop(path, None) if handler.command == "GET" else None
        if cut is not None:  # a broken connection part way through
            handler.wfile.write(data[:cut])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.wfile.write(data)


def point_hub_at(monkeypatch, url: str) -> None:
    """huggingface_hub in this process talking to `url`, as HF_ENDPOINT=url set before its
    import would have it (it reads the variable once, into two modules)."""
    from huggingface_hub import constants, file_download

    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
