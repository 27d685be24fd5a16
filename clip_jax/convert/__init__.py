"""Checkpoint import and export: OpenAI, open_clip, Hugging Face and clip_jax files."""
from clip_jax.convert.model_files import (
    EXPORT_FORMATS,
    export_checkpoint,
    load_checkpoint,
    load_pretrained,
    read_checkpoint,
)
from clip_jax.convert.torch_archive import CheckpointFormatError

__all__ = ["EXPORT_FORMATS", "CheckpointFormatError", "export_checkpoint", "load_checkpoint", "load_pretrained",
           "read_checkpoint"]
