"""The CLIP family: OpenAI's CLIP and the open_clip models of its architecture.

Image tower: a ViT (vit.py: class token, `ln_pre`, bias-free patch conv and projection)
or a ModifiedResNet (resnet.py); text tower: causal, pooled at EOT (text.py).  LayerNorm
eps 1e-5; images resized on the shorter side, centre-cropped and normalised with CLIP's
mean and std; CLIP's BPE tokenizer (ships with clip_jax); softmax scoring with the
temperature starting at 1/0.07 and capped at 100.  Checkpoint names: clip_naming.py.
"""
from __future__ import annotations

import numpy as np

from clip_jax.models.families import clip_naming
from clip_jax.models.families.base import Family
from clip_jax.models.resnet import ModifiedResNet
from clip_jax.models.text import TextTransformer, trim_after_eot
from clip_jax.models.vit import VisionTransformer


class CLIPFamily(Family):
    name = "clip"
    title = "CLIP"
    layer_norm_eps = clip_naming.LAYER_NORM_EPS
    resize = "crop"
    image_mean = (0.48145466, 0.4578275, 0.40821073)
    image_std = (0.26862954, 0.26130258, 0.27577711)
    tower_kinds = ("vit", "resnet")
    tokenizers = ("bpe",)
    pads_to_context = False
    trims_text = True
    partial_patches = False  # every CLIP tower was trained on whole patches
    default_template = "a photo of a {}."
    scoring = "softmax"

    def check_config(self, config) -> None:
        if config.vision.tower == "resnet" and config.vision.mlp_ratio != 4.0:
            raise ValueError(f"vision.mlp_ratio={config.vision.mlp_ratio}: a ModifiedResNet has no MLP blocks; "
                             "leave it at 4.0")

    def build_towers(self, config, *, dtype, remat, patch_dropout, full_last_block, kernels):
        vision, text = config.vision, config.text
        if vision.tower == "resnet":
            visual = ModifiedResNet(image_size=vision.image_size, layers=vision.layers, width=vision.width,
                                    num_heads=vision.num_heads, output_dim=config.embed_dim, remat=remat,
                                    dtype=dtype, kernels=kernels)
        else:
            visual = VisionTransformer(image_size=vision.image_size, patch_size=vision.patch_size,
                                       width=vision.width, layers=vision.layers, num_heads=vision.num_heads,
                                       mlp_dim=vision.mlp_dim, output_dim=config.embed_dim, act=config.act,
                                       remat=remat, dtype=dtype, patch_dropout=patch_dropout,
                                       full_last_block=full_last_block, kernels=kernels)
        text_tower = TextTransformer(context_length=text.context_length, vocab_size=text.vocab_size,
                                     width=text.width, layers=text.layers, num_heads=text.heads,
                                     mlp_dim=text.mlp_dim, output_dim=config.embed_dim, act=config.act, remat=remat,
                                     dtype=dtype, full_last_block=full_last_block, kernels=kernels)
        return visual, text_tower

    def trim_text(self, tokens) -> np.ndarray:
        return trim_after_eot(tokens)

    # OpenAI's names (open_clip's too); Hugging Face CLIPModel's are renamed to them.
    export_formats = ("clip_jax", "open_clip", "hf")
    hf_architecture = "CLIPModel"
    hf_model_types = ("clip",)

    def state_dict_rows(self, config):
        return clip_naming.state_dict_rows(config)

    def recognises(self, state_dict) -> bool:
        return "text_projection" in state_dict or "text_projection.weight" in state_dict  # OpenAI's or HF's name

    def own_names(self, state_dict) -> dict:
        return clip_naming.hf_to_openai(state_dict) if clip_naming.is_hf_state_dict(state_dict) else dict(state_dict)

    def hf_names(self, state_dict) -> dict:
        return clip_naming.openai_to_hf(state_dict)

    def infer_config(self, state_dict):
        return clip_naming.infer_config(state_dict)

    def shape_inference_warning(self, path, config):
        return clip_naming.activation_warning(path, config)  # shapes cannot tell QuickGELU from GELU

    def config_from_hf(self, hf, source, folder=None):
        return clip_naming.config_from_hf(hf, source)

    def config_to_hf(self, config, logit_scale):
        return clip_naming.config_to_hf(config, logit_scale)


CLIP = CLIPFamily()
