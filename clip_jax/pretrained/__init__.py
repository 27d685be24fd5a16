"""Pretrained checkpoints by name, and checkpoints on the Hugging Face hub.

    clip_jax.list_pretrained("ViT-B-32")                   # the rows of one name: tags, sources
    clip_jax.load_pretrained("ViT-B-32", "laion2b_s34b_b79k")
    clip_jax.load_checkpoint("hf-hub:google/siglip-base-patch16-224")

table.py holds the rows (checkpoints.json, package data); fetch.py gets files into the
cache and checks them; hub.py reads hub repositories; locate.py turns any checkpoint spec
into a local path; layouts.py names the files of each layout.  Loading the weights is
clip_jax.convert's (`load_pretrained` lives there), so this package imports no reader.
"""
from clip_jax.pretrained.fetch import DownloadError
from clip_jax.pretrained.locate import Located, locate
from clip_jax.pretrained.table import (
    Preprocessing,
    Pretrained,
    Source,
    get_pretrained,
    list_pretrained,
    register,
)

__all__ = ["DownloadError", "Located", "Preprocessing", "Pretrained", "Source", "get_pretrained",
           "list_pretrained", "locate", "register"]
