"""clip_jax: CLIP (Radford et al. 2021) and SigLIP in JAX/Flax.

    import clip_jax
    model, variables = clip_jax.load_pretrained("ViT-B-32", "openai")   # downloaded once, cached
    model, variables = clip_jax.load_checkpoint("ViT-B-32.pt")           # or any local checkpoint
    image_features = clip_jax.encode_image(model, variables, clip_jax.preprocess_batch(images))
    text_features = clip_jax.encode_text(model, variables, clip_jax.tokenize(["a dog", "a cat"]))

    model, variables = clip_jax.load_pretrained("google/siglip-base-patch16-224")
    tokenizer = clip_jax.load_tokenizer(model, "google/siglip-base-patch16-224")   # its spiece.model
    images = clip_jax.preprocess_batch(images, model.config.vision.image_size, family=model.config.family)
    text_features = clip_jax.encode_text(model, variables, tokenizer(["a dog", "a cat"]))
"""
from clip_jax.convert import CheckpointFormatError, export_checkpoint, load_checkpoint, load_pretrained
from clip_jax.inference import encode_image, encode_text, init_variables
from clip_jax.models import available_models, create_model, get_config, resolve_config
from clip_jax.preprocess import load_image, preprocess, preprocess_batch
from clip_jax.pretrained import get_pretrained, list_pretrained
from clip_jax.tokenizers import load_tokenizer
from clip_jax.tokenizers.bpe import tokenize

__version__ = "0.1.0"

__all__ = [
    "CheckpointFormatError",
    "available_models",
    "create_model",
    "encode_image",
    "encode_text",
    "export_checkpoint",
    "get_config",
    "get_pretrained",
    "init_variables",
    "load_checkpoint",
    "load_pretrained",
    "list_pretrained",
    "load_image",
    "load_tokenizer",
    "preprocess",
    "preprocess_batch",
    "resolve_config",
    "tokenize",
]
