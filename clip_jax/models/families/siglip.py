"""The SigLIP family: SigLIP and SigLIP 2 (FixRes).

Towers from siglip.py: a ViT without class token or `ln_pre` whose attention-pooling
(MAP) head output is the image embedding (so embed_dim is the image width), and a
bidirectional text tower read at the last position, through a linear head with bias.
LayerNorm eps 1e-6; images squashed to the model's size and scaled to [-1, 1];
SentencePiece tokenizers (SigLIP's, or Gemma's for SigLIP 2) padded to the full context
length; sigmoid scoring with a learned bias, temperature starting at 10 and bias at -10.
Checkpoint names (Hugging Face SiglipModel's): siglip_naming.py.
"""
from __future__ import annotations

from clip_jax.models.families import siglip_naming
from clip_jax.models.families.base import Family
from clip_jax.models.siglip_towers import SiglipTextTransformer, SiglipVisionTransformer


class SigLIPFamily(Family):
    name = "siglip"
    title = "SigLIP"
    layer_norm_eps = siglip_naming.LAYER_NORM_EPS
    resize = "squash"
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    tower_kinds = ("vit",)
    tokenizers = ("siglip", "gemma")
    pads_to_context = True
    trims_text = False  # the tower is bidirectional and reads its padding
    partial_patches = True  # so400m/14 at 384 px sees 27 x 27 patches of 14 (378 px)
    default_template = "This is a photo of {}."
    scoring = "sigmoid"

    def check_config(self, config) -> None:
        if config.embed_dim != config.vision.width:
            raise ValueError(f"a SigLIP image embedding is the image tower's width ({config.vision.width}), "
                             f"so embed_dim must equal it; got {config.embed_dim}")

    def build_towers(self, config, *, dtype, remat, patch_dropout, full_last_block, kernels):
        vision, text = config.vision, config.text
        visual = SiglipVisionTransformer(image_size=vision.image_size, patch_size=vision.patch_size,
                                         width=vision.width, layers=vision.layers, num_heads=vision.num_heads,
                                         mlp_dim=vision.mlp_dim, act=config.act, layer_norm_eps=self.layer_norm_eps,
                                         remat=remat, dtype=dtype, patch_dropout=patch_dropout, kernels=kernels)
        text_tower = SiglipTextTransformer(context_length=text.context_length, vocab_size=text.vocab_size,
                                           width=text.width, layers=text.layers, num_heads=text.heads,
                                           mlp_dim=text.mlp_dim, output_dim=config.embed_dim, act=config.act,
                                           layer_norm_eps=self.layer_norm_eps, remat=remat, dtype=dtype,
                                           full_last_block=full_last_block, kernels=kernels)
        return visual, text_tower

    # Hugging Face SiglipModel names, with each block's q/k/v packed as the Flax blocks hold them.
    export_formats = ("hf", "clip_jax")
    hf_architecture = "SiglipModel"  # (its activation is fixed, so shapes settle everything)
    hf_model_types = siglip_naming.HF_MODEL_TYPES

    def state_dict_rows(self, config):
        return siglip_naming.state_dict_rows(config)

    def recognises(self, state_dict) -> bool:
        return siglip_naming.is_siglip_state_dict(state_dict)

    def own_names(self, state_dict) -> dict:
        return siglip_naming.pack_qkv(state_dict)

    def hf_names(self, state_dict) -> dict:
        return siglip_naming.unpack_qkv(state_dict)

    def infer_config(self, state_dict):
        return siglip_naming.infer_config(state_dict)

    def config_from_hf(self, hf, source, folder=None):
        return siglip_naming.config_from_hf(hf, source, folder)

    def config_to_hf(self, config, logit_scale):
        return siglip_naming.config_to_hf(config)


SIGLIP = SigLIPFamily()
