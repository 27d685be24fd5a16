"""Shared SigLIP test fixtures: small SentencePiece models trained in the test (the real
spiece.model / tokenizer.model cannot be downloaded), laid out like SigLIP's (a T5-style
unigram model: pad 0, </s> 1, <unk> 2) and SigLIP 2's (a Gemma-style byte-fallback BPE:
<pad> 0, <eos> 1, <bos> 2, <unk> 3, no dummy prefix, identity normalisation)."""
from __future__ import annotations

import os
import random

import numpy as np

from tests.helpers.text import varied_strings

WORDS = ("a photo of the this is cat dog bird car plane ship truck horse frog deer red green blue yellow "
         "circle square triangle small large two three on left right background drawing close-up").split()


def corpus(lines: int = 1500, seed: int = 0) -> list[str]:
    rs = random.Random(seed)
    text = [" ".join(rs.choice(WORDS) for _ in range(rs.randint(3, 12))) for _ in range(lines)]
    text += [s.replace("\n", " ") for s in varied_strings(lines, seed=seed + 7)]
    return [line for line in text if line.strip()]


def train_sentencepiece(folder, kind: str, vocab_size: int = 1000) -> str:
    """A SentencePiece model file of `kind` ("siglip" or "gemma") with `vocab_size` pieces."""
    import sentencepiece

    prefix = os.path.join(str(folder), kind)
    common = dict(sentence_iterator=iter(corpus()), model_prefix=prefix, vocab_size=vocab_size, minloglevel=2,
                  character_coverage=0.9995)
    if kind == "siglip":
        sentencepiece.SentencePieceTrainer.train(model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                                 **common)
    else:
        sentencepiece.SentencePieceTrainer.train(
            model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
            bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
            normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            **common)
    return prefix + ".model"


def to_big_vision(state: dict, config, stacked: bool = False) -> dict:
    """transformers' SigLIP conversion run backwards: HF tensors -> big_vision's names and layouts."""
    heads = {"vision_model": config.vision.num_heads, "text_model": config.text.heads}
    out = {}

    def attention(prefix, tower, name, weight, bias):
        width = weight.shape[1] if name != "out" else weight.shape[0]
        n = heads[tower]
        if name == "out":  # torch [width, heads * head_dim] -> [heads, head_dim, width]
            out[f"{prefix}/out/kernel"] = weight.T.reshape(n, -1, width)
            out[f"{prefix}/out/bias"] = bias
        else:  # torch [heads * head_dim, width] -> [width, heads, head_dim]
            out[f"{prefix}/{name}/kernel"] = weight.T.reshape(width, n, -1)
            out[f"{prefix}/{name}/bias"] = bias.reshape(n, -1)

    for tower, root, layers in (("vision_model", "img/Transformer", config.vision.layers),
                                ("text_model", "txt/Encoder_0", config.text.layers)):
        for i in range(layers):
            hf, bv = f"{tower}.encoder.layers.{i}", f"{root}/encoderblock_{i}"
            for ln, name in (("layer_norm1", "LayerNorm_0"), ("layer_norm2", "LayerNorm_1")):
                out[f"{bv}/{name}/scale"] = state[f"{hf}.{ln}.weight"]
                out[f"{bv}/{name}/bias"] = state[f"{hf}.{ln}.bias"]
            for fc, name in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
                out[f"{bv}/MlpBlock_0/{name}/kernel"] = state[f"{hf}.mlp.{fc}.weight"].T
                out[f"{bv}/MlpBlock_0/{name}/bias"] = state[f"{hf}.mlp.{fc}.bias"]
            for proj, name in (("q", "query"), ("k", "key"), ("v", "value"), ("out", "out")):
                attention(f"{bv}/MultiHeadDotProductAttention_0", tower, name,
                          state[f"{hf}.self_attn.{proj}_proj.weight"], state[f"{hf}.self_attn.{proj}_proj.bias"])
    out["img/embedding/kernel"] = state["vision_model.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
    out["img/embedding/bias"] = state["vision_model.embeddings.patch_embedding.bias"]
    out["img/pos_embedding"] = state["vision_model.embeddings.position_embedding.weight"][None]
    out["img/Transformer/encoder_norm/scale"] = state["vision_model.post_layernorm.weight"]
    out["img/Transformer/encoder_norm/bias"] = state["vision_model.post_layernorm.bias"]
    out["img/MAPHead_0/probe"] = state["vision_model.head.probe"]
    map_attention = "img/MAPHead_0/MultiHeadDotProductAttention_0"
    weights = np.split(state["vision_model.head.attention.in_proj_weight"], 3)
    biases = np.split(state["vision_model.head.attention.in_proj_bias"], 3)
    for name, weight, bias in zip(("query", "key", "value"), weights, biases):
        attention(map_attention, "vision_model", name, weight, bias)
    attention(map_attention, "vision_model", "out", state["vision_model.head.attention.out_proj.weight"],
              state["vision_model.head.attention.out_proj.bias"])
    out["img/MAPHead_0/LayerNorm_0/scale"] = state["vision_model.head.layernorm.weight"]
    out["img/MAPHead_0/LayerNorm_0/bias"] = state["vision_model.head.layernorm.bias"]
    for fc, name in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
        out[f"img/MAPHead_0/MlpBlock_0/{name}/kernel"] = state[f"vision_model.head.mlp.{fc}.weight"].T
        out[f"img/MAPHead_0/MlpBlock_0/{name}/bias"] = state[f"vision_model.head.mlp.{fc}.bias"]
    out["txt/Embed_0/embedding"] = state["text_model.embeddings.token_embedding.weight"]
    out["txt/pos_embedding"] = state["text_model.embeddings.position_embedding.weight"][None]
    out["txt/Encoder_0/encoder_norm/scale"] = state["text_model.final_layer_norm.weight"]
    out["txt/Encoder_0/encoder_norm/bias"] = state["text_model.final_layer_norm.bias"]
    out["txt/head/kernel"] = state["text_model.head.weight"].T
    out["txt/head/bias"] = state["text_model.head.bias"]
    out["t"], out["b"] = state["logit_scale"], state["logit_bias"]
    if stacked:  # scanned models keep one `encoderblock` with a leading layer axis
        for root, layers in (("img/Transformer", config.vision.layers), ("txt/Encoder_0", config.text.layers)):
            names = {k.split("/", 3)[3] for k in out if k.startswith(f"{root}/encoderblock_")}
            for name in names:
                out[f"{root}/encoderblock/{name}"] = np.stack(
                    [out.pop(f"{root}/encoderblock_{i}/{name}") for i in range(layers)])
    return {f"params/{k}": np.ascontiguousarray(v) for k, v in out.items()}
