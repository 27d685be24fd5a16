"""Files into the local cache, verified: a URL's file (its SHA-256 checked before it
enters the cache) and hub files (through huggingface_hub: its cache, resumable
downloads, HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE; each cached blob checked against
the hash the hub named it by).

A corrupt cached file is downloaded again, or, offline, refused with the path to delete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import urllib.error
import urllib.request

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

CHUNK = 2**20
RETRIES = 5  # broken connections resumed per download
_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime) hashed in this process


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its check; the message says what was tried."""


def offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub reads it (at its import) or as set since."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
        "1", "true", "yes", "on")


def cache_root(cache_dir: str | None = None) -> str:
    """Where URL downloads go: cache_dir, $CLIP_JAX_CACHE, or ~/.cache/clip_jax."""
    return os.path.expanduser(cache_dir or os.environ.get("CLIP_JAX_CACHE") or "~/.cache/clip_jax")


def file_hash(path: str, algorithm: str = "sha256", git_blob: bool = False) -> str:
    digest = hashlib.new(algorithm)
    if git_blob:  # git's object id: sha1 of "blob <size>\0" + content
        digest.update(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: str, expected: str) -> bool:
    """Whether `path` hashes to `expected`: a SHA-256 (64 hex digits) or a git blob id (40);
    remembered per process while the file's size and mtime stay the same."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return True
    if len(expected) == 64:
        found = file_hash(path)
    elif len(expected) == 40:
        found = file_hash(path, "sha1", git_blob=True)
    else:
        return True  # the hub named the blob by nothing we can check
    if found == expected:
        _verified.add(key)
    return found == expected


# -- URLs -------------------------------------------------------------------------------


def _download(url: str, partial: str) -> None:
    """Append the rest of `url` to `partial`, resuming where it stops (a Range request),
    through a few broken connections."""
    for attempt in range(RETRIES + 1):
        done = os.path.getsize(partial) if os.path.exists(partial) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if done and response.status != 206:  # the server ignored the range: start again
                    done = 0
                total = response.headers.get("Content-Length")
                total = int(total) + done if total is not None else None
                with open(partial, "ab" if done else "wb") as f, tqdm(
                        total=total, initial=done, unit="B", unit_scale=True, desc=os.path.basename(url),
                        disable=None) as bar:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                if total is not None and os.path.getsize(partial) < total:
                    raise ConnectionError(f"connection closed at {os.path.getsize(partial)} of {total} bytes")
                return
        except urllib.error.HTTPError as error:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (OSError, ConnectionError) as error:
            if attempt == RETRIES:
                raise DownloadError(f"{url}: {error} (after {RETRIES} resumed attempts; the partial file "
                                    f"{partial} resumes next time)") from None
            log.warning("download of %s broke at %d bytes (%s); resuming", url,
                        os.path.getsize(partial) if os.path.exists(partial) else 0, error)
            time.sleep(min(2**attempt, 10) * 0.1)


def fetch_url(url: str, sha256: str, cache_dir: str | None = None) -> str:
    """The cached file of `url`, downloaded when missing or corrupt.  The file enters the
    cache only once its SHA-256 is `sha256`; a mismatch is refused and nothing is cached."""
    folder = os.path.join(cache_root(cache_dir), sha256)
    path = os.path.join(folder, os.path.basename(url.split("?")[0]) or "download")
    if os.path.exists(path):
        if _matches(path, sha256):
            return path
        if offline():
            raise DownloadError(f"cached file {path} is corrupt (its SHA-256 is not {sha256}); delete it and load "
                                "again with network access (HF_HUB_OFFLINE is set)")
        log.warning("cached file %s is corrupt (SHA-256 is not %s); downloading it again", path, sha256)
        os.remove(path)
    if offline():
        raise DownloadError(f"HF_HUB_OFFLINE is set and {url} is not in the cache (expected at {path}); load once "
                            "with network access, or put the file there, or pass a local file instead")
    os.makedirs(folder, exist_ok=True)
    partial = path + ".incomplete"
    try:
        _download(url, partial)
    except DownloadError as error:
        raise DownloadError(f"could not download {error}; without network, put the file at {path} "
                            "(its SHA-256 is checked) or pass a local file") from None
    found = file_hash(partial)
    if found != sha256:
        os.remove(partial)
        raise DownloadError(f"{url}: downloaded file's SHA-256 is {found}, expected {sha256}; refused and not "
                            "cached (a changed or tampered file, or a wrong table entry)")
    os.replace(partial, path)
    return path


# -- hub files --------------------------------------------------------------------------


def _blob_hash(path: str) -> str:
    """The hash huggingface_hub named a cached file's blob by (its ETag: a SHA-256 for
    LFS files, a git blob id for small ones)."""
    name = os.path.basename(os.path.realpath(path))
    return name if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", name) else ""


def _hub_download(repo_id: str, filename: str, revision: str | None, cache_dir: str | None,
                  force: bool = False) -> str:
    """hf_hub_download, through a few broken connections: huggingface_hub keeps the
    partial file (.incomplete) and resumes it with a Range request on the next call."""
    import requests
    from huggingface_hub import hf_hub_download

    for attempt in range(RETRIES + 1):
        try:
            return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                   local_files_only=offline(), force_download=force and attempt == 0)
        except requests.HTTPError:  # not found, gated, offline and not cached: no retry helps
            raise
        except (requests.RequestException, OSError) as error:
            if attempt == RETRIES:
                raise
            log.warning("download of %s from %s broke (%s); resuming", filename, repo_id, str(error)[:200])
            time.sleep(min(2**attempt, 10) * 0.1)
    raise AssertionError("unreachable")


def hub_file(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None) -> str:
    """One file of a hub repository, from huggingface_hub's cache or downloaded; its blob
    verified against its hash (corrupt: downloaded again, or refused offline)."""
    path = _hub_download(repo_id, filename, revision, cache_dir)
    expected = _blob_hash(path)
    if not expected or _matches(path, expected):
        return path
    blob = os.path.realpath(path)
    if offline():
        raise DownloadError(f"cached file {path} (blob {blob}) is corrupt: its hash is not {expected}; delete the "
                            "blob and load again with network access (HF_HUB_OFFLINE is set)")
    log.warning("cached %s of %s is corrupt (hash is not %s); downloading it again", filename, repo_id, expected)
    path = _hub_download(repo_id, filename, revision, cache_dir, force=True)
    if not _matches(path, _blob_hash(path) or expected):
        raise DownloadError(f"{repo_id}/{filename}: downloaded again but its hash is still not {expected}; "
                            f"refused (delete {os.path.realpath(path)})")
    return path
