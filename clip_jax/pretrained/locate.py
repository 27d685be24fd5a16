"""A checkpoint spec, as every entry point takes it, to a local path:

  * a local file or folder (as it is);
  * `hf-hub:ORG/NAME` (hub.py);
  * a pretrained checkpoint, `NAME:TAG` ("ViT-B-32:laion2b_s34b_b79k") or a NAME with one
    tag ("google/siglip-base-patch16-224"), from the table (table.py).

A pretrained row also fixes the architecture and activation the file is read with.
"""
from __future__ import annotations

import dataclasses
import os

from clip_jax.pretrained import hub
from clip_jax.pretrained.fetch import DownloadError, fetch_url
from clip_jax.pretrained.table import Pretrained, get_pretrained, is_model_name, model_names


@dataclasses.dataclass(frozen=True)
class Located:
    path: str  # a local file or folder
    row: Pretrained | None = None  # the pretrained row it came from

    @property
    def name(self) -> str | None:
        """The architecture the row fixes (None: the checkpoint describes its own)."""
        return self.row.architecture if self.row else None

    @property
    def act(self) -> str | None:
        return self.row.act if self.row else None


def pretrained_row(spec: str) -> Pretrained | None:
    """The row a spec names (NAME:TAG, or NAME alone), or None when it names none."""
    if is_model_name(spec):
        return get_pretrained(spec)
    model, colon, tag = spec.rpartition(":")
    if colon and is_model_name(model):
        return get_pretrained(model, tag)
    return None


def fetch_row(row: Pretrained, cache_dir: str | None = None) -> Located:
    """A row's files, from its hub repository, else (a row with both, as OpenAI's) its URL."""
    source = row.source
    hub_failed = None
    if source.hf_hub:
        hub_cache = os.path.join(cache_dir, "hub") if cache_dir else None
        try:
            if source.files:
                return Located(hub.fetch_first(source.hf_hub, source.files, cache_dir=hub_cache), row)
            return Located(hub.fetch(hub.HubSpec(source.hf_hub), cache_dir=hub_cache), row)
        except DownloadError as error:
            if not source.url:
                raise
            hub_failed = error
    try:
        return Located(fetch_url(source.url, source.sha256, cache_dir), row)
    except DownloadError as error:
        if hub_failed is None:
            raise
        raise DownloadError(f"{row.spec}: neither source answered. Hub: {hub_failed} URL: {error}") from None


def locate(spec, cache_dir: str | None = None) -> Located:
    """The local path of a checkpoint spec (see the module docstring), fetched when needed.
    cache_dir: where downloads go (default: huggingface_hub's cache for hub files,
    $CLIP_JAX_CACHE or ~/.cache/clip_jax for URLs)."""
    spec = os.fspath(spec)
    if hub.is_hub_spec(spec):
        return Located(hub.fetch(spec, cache_dir=os.path.join(cache_dir, "hub") if cache_dir else None))
    local = os.path.expanduser(spec)
    if os.path.exists(local):
        return Located(local)
    row = pretrained_row(spec)
    if row is not None:
        return fetch_row(row, cache_dir)
    import difflib

    close = difflib.get_close_matches(spec.partition(":")[0], model_names(), n=3, cutoff=0.6)
    hint = f"; pretrained names close to it: {', '.join(close)}" if close else ""
    raise FileNotFoundError(f"checkpoint {spec!r} does not exist: not a local file or folder, not hf-hub:ORG/NAME, "
                            f"and not a pretrained NAME:TAG (clip_jax.list_pretrained() lists them){hint}")
