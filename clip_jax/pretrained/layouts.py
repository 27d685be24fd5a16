"""File names of the checkpoint layouts clip_jax reads, in one place: the readers
(clip_jax/convert/) look for them in a folder, and the hub download (hub.py) fetches just
these from a repository, so the two cannot disagree about what a layout holds.
"""
from __future__ import annotations

# open_clip's hub layout: its config beside weights (open_clip's own order of preference).
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
# A folder with an open_clip config may also hold weights under these plainer names.
OTHER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")

# Hugging Face CLIPModel / SiglipModel folders: config.json beside one weight file, or an
# index naming shards.
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

# SentencePiece models of SigLIP (spiece.model) and SigLIP 2 (Gemma's tokenizer.model).
TOKENIZER_FILES = ("spiece.model", "tokenizer.model")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def index_file(weights: str) -> str:
    """The shard index Hugging Face writes beside sharded weights."""
    return f"{weights}.index.json"
