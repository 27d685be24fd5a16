"""`hf-hub:ORG/NAME` checkpoints: the repository's files are listed, the layout clip_jax
reads is chosen from their names (open_clip's hub layout, a Hugging Face CLIPModel /
SiglipModel folder, a big_vision .npz, a lone weight file), and only that layout's files
are fetched (weights, config, SentencePiece tokenizer) into huggingface_hub's cache.
The result is a local path the readers take like any other.

Spellings: `hf-hub:ORG/NAME`, `hf-hub:ORG/NAME@REVISION`, and `hf-hub:ORG/NAME/FILE` for
one file of a repository.  Offline (HF_HUB_OFFLINE=1, or no network) the cached snapshot
is read; what is not cached is an error that says so.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

from clip_jax.pretrained import layouts
from clip_jax.pretrained.fetch import DownloadError, hub_file, offline

PREFIX = "hf-hub:"
_REPO = re.compile(r"^(?P<repo>[\w.\-]+/[\w.\-]+)(?:@(?P<revision>[\w.\-/]+?))?(?:/(?P<file>.+))?$")


@dataclasses.dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self):
        return (PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")
                + (f"/{self.filename}" if self.filename else ""))


def is_hub_spec(spec: str) -> bool:
    return os.fspath(spec).startswith(PREFIX)


def parse(spec: str) -> HubSpec:
    match = _REPO.match(spec[len(PREFIX):]) if is_hub_spec(spec) else None
    if not match:
        raise ValueError(f"{spec!r} is not a hub checkpoint; write hf-hub:ORG/NAME (optionally @REVISION, or "
                         "/FILE for one file of the repository)")
    return HubSpec(match["repo"], match["revision"], match["file"])


# -- layouts: the files to fetch, chosen from a repository's file names -----------------


def _tokenizers(files: set[str]) -> list[str]:
    return [f for f in layouts.TOKENIZER_FILES if f in files]


def _open_clip(files: set[str]) -> list[str] | None:
    if layouts.OPEN_CLIP_CONFIG not in files:
        return None
    weights = next((f for f in layouts.OPEN_CLIP_WEIGHTS + layouts.OTHER_WEIGHTS if f in files), None)
    return [layouts.OPEN_CLIP_CONFIG, weights, *_tokenizers(files)] if weights else None


def _hf_folder(files: set[str]) -> list[str] | None:
    if layouts.HF_CONFIG not in files:
        return None
    for weights in layouts.HF_WEIGHTS:
        stem, suffix = os.path.splitext(weights)
        if layouts.index_file(weights) in files:  # sharded: the index and every shard
            shards = sorted(f for f in files if re.fullmatch(rf"{re.escape(stem)}-\d+-of-\d+{re.escape(suffix)}", f))
            return [layouts.HF_CONFIG, layouts.index_file(weights), *shards, *_tokenizers(files)]
        if weights in files:
            return [layouts.HF_CONFIG, weights, *_tokenizers(files)]
    return None


def _one_file(suffixes: tuple[str, ...]) -> Callable[[set[str]], list[str] | None]:
    def select(files: set[str]) -> list[str] | None:
        found = [f for f in files if f.endswith(suffixes) and "/" not in f]
        return found if len(found) == 1 else None
    return select


# (what it is, which files to fetch or None); the first that applies is fetched.  The
# readers' order (clip_jax/convert/readers.py): open_clip's layout wins over HF's beside it.
LAYOUTS: list[tuple[str, Callable[[set[str]], list[str] | None]]] = [
    (f"open_clip hub layout ({layouts.OPEN_CLIP_CONFIG} + open_clip weights)", _open_clip),
    (f"Hugging Face CLIPModel / SiglipModel folder ({layouts.HF_CONFIG} + {' or '.join(layouts.HF_WEIGHTS)})",
     _hf_folder),
    ("big_vision SigLIP .npz (one in the repository)", _one_file((".npz",))),
    ("one weight file (.safetensors, .bin, .pth, .pt) with nothing else", _one_file(layouts.WEIGHT_SUFFIXES)),
]


def choose_files(spec: HubSpec, files: list[str]) -> list[str]:
    """The files of `spec`'s layout; ValueError naming the files found and the layouts read."""
    if spec.filename:
        if spec.filename not in files:
            raise ValueError(f"{spec}: the repository has no file {spec.filename!r}; it holds {sorted(files)}")
        return [spec.filename]
    present = set(files)
    for _, select in LAYOUTS:
        chosen = select(present)
        if chosen:
            return chosen
    readable = "; ".join(what for what, _ in LAYOUTS)
    raise ValueError(f"{spec}: no layout clip_jax reads among the repository's files {sorted(files)[:40]}. It reads: "
                     f"{readable}. To load one file of it, write {PREFIX}{spec.repo_id}/FILE")


# -- listing a repository: online from the hub, offline from the cached snapshot ----------


def _cached_files(spec: HubSpec, cache_dir: str | None) -> tuple[str, list[str]] | None:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(spec.repo_id, revision=spec.revision, cache_dir=cache_dir, local_files_only=True)
    except Exception:  # huggingface_hub raises several kinds for "not cached"
        return None
    files = [os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
             for root, _, names in os.walk(folder) for name in names]
    return folder, files


def list_files(spec: HubSpec, cache_dir: str | None = None) -> list[str]:
    """The repository's file names: asked of the hub, else (offline, no network) those of
    its cached snapshot."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    reason = "HF_HUB_OFFLINE is set"
    if not offline():
        try:
            info = HfApi().model_info(spec.repo_id, revision=spec.revision)
            return [s.rfilename for s in info.siblings or []]
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise DownloadError(f"{spec}: {type(error).__name__} at {constants.ENDPOINT} "
                                f"({str(error).splitlines()[0]})") from None
        except Exception as error:  # no network, a proxy, a timeout: the cache may still have it
            reason = f"{constants.ENDPOINT} could not be reached ({type(error).__name__}: {str(error)[:200]})"
    cached = _cached_files(spec, cache_dir)
    if cached is None:
        raise DownloadError(
            f"{spec}: {reason}, and the repository is not in huggingface_hub's cache "
            f"({cache_dir or constants.HF_HUB_CACHE}). Load it once with network access (it is cached then, and "
            "HF_HUB_OFFLINE=1 loads it offline), or download it elsewhere and pass the local folder")
    return cached[1]


def _file(spec: HubSpec, name: str, cache_dir: str | None) -> str:
    try:
        return hub_file(spec.repo_id, name, revision=spec.revision, cache_dir=cache_dir)
    except DownloadError:
        raise
    except Exception as error:  # huggingface_hub's HTTP, offline and cache errors
        raise DownloadError(f"{spec}: could not fetch {name} ({type(error).__name__}: {str(error)[:300]}); "
                            "offline, only files fetched before are in the cache") from None


def fetch(spec: str | HubSpec, cache_dir: str | None = None) -> str:
    """The local path of a hub checkpoint: the snapshot folder holding its layout's files,
    or the file itself for one-file layouts."""
    spec = parse(spec) if isinstance(spec, str) else spec
    chosen = choose_files(spec, list_files(spec, cache_dir))
    paths = [_file(spec, name, cache_dir) for name in chosen]
    if len(chosen) == 1:  # one-file layouts (a folder layout is a config and weights at least)
        return paths[0]
    return os.path.dirname(paths[0])


def fetch_first(repo_id: str, candidates: tuple[str, ...], revision: str | None = None,
                cache_dir: str | None = None) -> str:
    """The first of `candidates` that the repository holds (open_clip's way of finding a
    checkpoint's weight file), cached."""
    spec = HubSpec(repo_id, revision)
    files = set(list_files(spec, cache_dir))
    for name in candidates:
        if name in files:
            return _file(spec, name, cache_dir)
    raise DownloadError(f"{spec}: none of {', '.join(candidates)} in the repository; it holds {sorted(files)[:40]}")
