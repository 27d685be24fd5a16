"""open_clip's Hugging Face hub layout: a folder with open_clip_config.json
({"model_cfg": {...}, "preprocess_cfg": {...}}) beside the weights
(open_clip_model.safetensors or open_clip_pytorch_model.bin, ...), which open_clip loads
with `create_model("local-dir:FOLDER")` (or "hf-hub:ORG/NAME").  The architecture and the
activation travel with the weights, so nothing has to name them.
"""
from __future__ import annotations

import glob
import json
import logging
import os

from clip_jax.models import CLIPConfig
from clip_jax.models.open_clip_config import to_open_clip
from clip_jax.models.resolve import read_json, resolve_config
from clip_jax.preprocess import MEAN, STD
from clip_jax.pretrained import layouts

CONFIG_FILE = layouts.OPEN_CLIP_CONFIG
WEIGHTS_FILE = layouts.OPEN_CLIP_WEIGHTS[0]  # what export writes into a folder
_PREFERRED = layouts.OPEN_CLIP_WEIGHTS + layouts.OTHER_WEIGHTS  # open_clip's order among a folder's weight files

log = logging.getLogger(__name__)


def config_path(folder: str) -> str:
    return os.path.join(folder, CONFIG_FILE)


def has_config(folder: str) -> bool:
    return os.path.isfile(config_path(folder))


def read_config(folder: str) -> CLIPConfig:
    """The architecture in FOLDER/open_clip_config.json; ValueError naming the file and
    any field clip_jax cannot build."""
    path = config_path(folder)
    data = read_json(path)
    if "model_cfg" not in data:
        raise ValueError(f"{path}: no 'model_cfg' (an open_clip_config.json holds "
                         "{\"model_cfg\": {...}, \"preprocess_cfg\": {...}})")
    preprocess = data.get("preprocess_cfg") or {}
    for key, ours in (("mean", MEAN), ("std", STD)):
        if key in preprocess and [round(float(x), 6) for x in preprocess[key]] != [round(float(x), 6) for x in ours]:
            log.warning("%s: preprocess_cfg.%s=%s differs from CLIP's %s, which clip_jax.preprocess uses",
                        path, key, preprocess[key], list(ours))
    return resolve_config(data)


def find_weights(folder: str) -> str | None:
    """The weight file open_clip would pick in FOLDER, or None."""
    for name in _PREFERRED:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    found = sorted(p for suffix in layouts.WEIGHT_SUFFIXES
                   for p in glob.glob(os.path.join(glob.escape(folder), "*" + suffix)))
    return found[0] if found else None


def check_config_slot(folder: str, config: CLIPConfig) -> None:
    """ValueError when FOLDER already holds an open_clip_config.json of another
    architecture: it belongs to other weights there, and overwriting it would change how
    they load."""
    path = config_path(folder)
    if os.path.exists(path):
        try:
            existing = read_config(folder)
        except ValueError:
            existing = None
        if existing != config:
            raise ValueError(f"{path} already describes another architecture; export into a folder of its own "
                             "(the config beside a weight file is what open_clip and clip_jax load it with)")


def write_config(folder: str, config: CLIPConfig) -> str:
    """FOLDER/open_clip_config.json for `config`, with CLIP's preprocessing; returns its path."""
    check_config_slot(folder, config)
    path = config_path(folder)
    content = {
        "model_cfg": to_open_clip(config),
        "preprocess_cfg": {"mean": [round(float(x), 8) for x in MEAN], "std": [round(float(x), 8) for x in STD],
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    os.makedirs(folder or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2)
    os.replace(tmp, path)
    return path
