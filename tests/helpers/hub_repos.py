"""Hub repositories in their real layouts, written by the libraries that write them, from
seeded random weights (tiny architectures), with the features their own library computes
for fixed inputs:

  * "open_clip": open_clip's hub layout (`save_for_hf`: open_clip_config.json,
    open_clip_model.safetensors and open_clip_pytorch_model.bin), and beside it, as LAION's
    repositories have, a transformers CLIPModel folder of other weights;
  * "hf-clip": a transformers CLIPModel folder, sharded (index + shards);
  * "siglip": a transformers SiglipModel folder with its spiece.model;
  * "npz": a big_vision SigLIP .npz (the SigLIP model's weights), alone in its repository;
  * "plain.pt": one torch.save state dict (open_clip's model), as OpenAI-style URLs serve.
"""
from __future__ import annotations

import importlib
import os

import numpy as np

import clip_jax
from tests.helpers.oracles import TINY_VIT_OPEN_CLIP, perturb_torch_model, register_open_clip_tiny_vit
from tests.helpers.siglip import to_big_vision, train_sentencepiece


class _NoTokenizer:
    """open_clip's save_for_hf also saves an HF tokenizer; CLIP's BPE ships with clip_jax."""

    def save_pretrained(self, folder):
        pass


def inputs(config, seed: int = 0):
    rs = np.random.RandomState(seed)
    size = config.vision.image_size
    images = rs.randn(2, size, size, 3).astype(np.float32)
    tokens = rs.randint(1, config.text.vocab_size - 2, (2, config.text.context_length)).astype(np.int32)
    if config.text.tokenizer == "bpe":
        tokens[:, 0], tokens[0, 9], tokens[0, 10:] = 49406, 49407, 0
        tokens[1, -1] = 49407
    else:
        tokens[0, 6:] = 1  # a short caption: EOS then EOS padding, as SigLIP's tokenizer pads
    return images, tokens


def _torch_features(torch, model, images, tokens, hf: bool):
    pixels, ids = torch.from_numpy(images.transpose(0, 3, 1, 2)), torch.from_numpy(tokens).long()
    with torch.no_grad():
        if hf:
            return model.get_image_features(pixel_values=pixels).numpy(), model.get_text_features(input_ids=ids).numpy()
        return model.encode_image(pixels).numpy(), model.encode_text(ids).numpy()


def write_repos(root: str) -> dict:
    """{repo name: (folder, clip_jax architecture, (image features, text features), inputs)}."""
    import open_clip
    import torch
    import transformers

    from clip_jax.models.families.clip_naming import config_to_hf as clip_to_hf
    from clip_jax.models.families.siglip_naming import config_to_hf as siglip_to_hf

    save_for_hf = importlib.import_module("open_clip.push_to_hf_hub").save_for_hf
    repos = {}
    clip_config = clip_jax.get_config("tiny-vit")
    clip_inputs = inputs(clip_config)

    torch.manual_seed(0)
    name = register_open_clip_tiny_vit("tiny-vit-hub-test")
    model = open_clip.create_model(name).eval()
    perturb_torch_model(model, seed=1)
    folder = os.path.join(root, "open_clip")
    save_for_hf(model, _NoTokenizer(), TINY_VIT_OPEN_CLIP, folder, safe_serialization="both")
    repos["open_clip"] = (folder, "tiny-vit", _torch_features(torch, model, *clip_inputs, hf=False), clip_inputs)
    torch.save(model.state_dict(), os.path.join(root, "plain.pt"))
    repos["plain.pt"] = (os.path.join(root, "plain.pt"), "tiny-vit", repos["open_clip"][2], clip_inputs)

    hf_config = clip_to_hf(clip_config, 2.6592)
    hf_config = transformers.CLIPConfig(text_config=hf_config["text_config"], vision_config=hf_config["vision_config"],
                                        projection_dim=hf_config["projection_dim"])
    other = transformers.CLIPModel(hf_config).eval()
    perturb_torch_model(other, seed=2)
    other.save_pretrained(folder)  # the HF layout beside open_clip's, other weights
    hf_model = transformers.CLIPModel(hf_config).eval()
    perturb_torch_model(hf_model, seed=3)
    folder = os.path.join(root, "hf-clip")
    hf_model.save_pretrained(folder, max_shard_size="4MB")
    repos["hf-clip"] = (folder, "tiny-vit", _torch_features(torch, hf_model, *clip_inputs, hf=True), clip_inputs)

    siglip_config = clip_jax.get_config("tiny-siglip")
    hf = siglip_to_hf(siglip_config)
    siglip = transformers.SiglipModel(transformers.SiglipConfig(text_config=hf["text_config"],
                                                                vision_config=hf["vision_config"])).eval()
    perturb_torch_model(siglip, seed=4)
    with torch.no_grad():
        siglip.logit_bias.fill_(-10.0)
    folder = os.path.join(root, "siglip")
    siglip.save_pretrained(folder)
    spiece = train_sentencepiece(folder, "siglip", siglip_config.text.vocab_size)
    os.replace(spiece, os.path.join(folder, "spiece.model"))
    os.remove(os.path.join(folder, "siglip.vocab"))
    siglip_inputs = inputs(siglip_config)
    expected = _torch_features(torch, siglip, *siglip_inputs, hf=True)
    repos["siglip"] = (folder, "tiny-siglip", expected, siglip_inputs)
    folder = os.path.join(root, "npz")
    os.makedirs(folder)
    state = {k: v.numpy().copy() for k, v in siglip.state_dict().items()}
    np.savez(os.path.join(folder, "siglip_tiny.npz"), **to_big_vision(state, siglip_config))
    repos["npz"] = (folder, "tiny-siglip", expected, siglip_inputs)
    return repos


def features(model, variables, images, tokens):
    return (np.asarray(clip_jax.encode_image(model, variables, images)),
            np.asarray(clip_jax.encode_text(model, variables, tokens)))
