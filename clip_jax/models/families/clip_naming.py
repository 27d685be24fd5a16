"""How CLIP-family parameters are named in other projects' files: OpenAI's names (which
open_clip keeps) as rows, Hugging Face CLIPModel's names (renamed to OpenAI's and back),
transformers' CLIPConfig (config.json), and the architecture of a bare OpenAI-named state
dict read from its tensor shapes (OpenAI's `build_model` rule).

HF splits OpenAI's packed QKV into q/k/v projections, stores the two projections as
Linear layers (transposed), and renames the rest; ResNet towers do not exist in HF.
The conversion goes through OpenAI's names so the Flax mapping lives in one place.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterator, Mapping

import numpy as np

from clip_jax.models.architecture import CLIPConfig, TextConfig, VisionConfig
from clip_jax.models.families.naming import (
    Row,
    contiguous,
    layer_norm_rows,
    pack_qkv_parts,
    shapes_text,
    text_config_from_hf,
    text_config_to_hf,
    vision_config_from_hf,
    vision_config_to_hf,
)
from clip_jax.models.registry import MODELS, name_of

LAYER_NORM_EPS = 1e-5
# transformers' CLIPTextConfig defaults, for keys a config.json leaves out
HF_TEXT_DEFAULTS = {"max_position_embeddings": 77, "vocab_size": 49408, "hidden_size": 512,
                    "num_attention_heads": 8, "num_hidden_layers": 12, "intermediate_size": 2048}

# -- OpenAI's names --------------------------------------------------------------------


def _transformer_rows(torch_prefix: str, flax_path: tuple[str, ...], layers: int) -> Iterator[Row]:
    blocks = flax_path + ("transformer", "blocks")
    for i in range(layers):
        p = f"{torch_prefix}transformer.resblocks.{i}."
        yield Row(p + "attn.in_proj_weight", "params", blocks + ("attn", "in_proj", "kernel"), "linear", i)
        yield Row(p + "attn.in_proj_bias", "params", blocks + ("attn", "in_proj", "bias"), layer=i)
        yield Row(p + "attn.out_proj.weight", "params", blocks + ("attn", "out_proj", "kernel"), "linear", i)
        yield Row(p + "attn.out_proj.bias", "params", blocks + ("attn", "out_proj", "bias"), layer=i)
        for ln in ("ln_1", "ln_2"):
            yield Row(p + ln + ".weight", "params", blocks + (ln, "scale"), layer=i)
            yield Row(p + ln + ".bias", "params", blocks + (ln, "bias"), layer=i)
        for fc in ("c_fc", "c_proj"):
            yield Row(p + f"mlp.{fc}.weight", "params", blocks + ("mlp", fc, "kernel"), "linear", i)
            yield Row(p + f"mlp.{fc}.bias", "params", blocks + ("mlp", fc, "bias"), layer=i)


def _batch_norm_rows(key: str, path: tuple[str, ...]) -> Iterator[Row]:
    yield Row(key + ".weight", "params", path + ("scale",))
    yield Row(key + ".bias", "params", path + ("bias",))
    yield Row(key + ".running_mean", "batch_stats", path + ("mean",))
    yield Row(key + ".running_var", "batch_stats", path + ("var",))


def _resnet_rows(vision: VisionConfig) -> Iterator[Row]:
    v = ("visual",)
    for n in (1, 2, 3):
        yield Row(f"visual.conv{n}.weight", "params", v + (f"conv{n}", "kernel"), "conv")
        yield from _batch_norm_rows(f"visual.bn{n}", v + (f"bn{n}",))
    for stage, blocks in enumerate(vision.layers, start=1):
        for j in range(blocks):
            t, f = f"visual.layer{stage}.{j}.", v + (f"layer{stage}_{j}",)
            for n in (1, 2, 3):
                yield Row(f"{t}conv{n}.weight", "params", f + (f"conv{n}", "kernel"), "conv")
                yield from _batch_norm_rows(f"{t}bn{n}", f + (f"bn{n}",))
            if j == 0:  # every stage's first block changes width or stride
                yield Row(f"{t}downsample.0.weight", "params", f + ("downsample_conv", "kernel"), "conv")
                yield from _batch_norm_rows(f"{t}downsample.1", f + ("downsample_bn",))
    a = v + ("attnpool",)
    yield Row("visual.attnpool.positional_embedding", "params", a + ("positional_embedding",))
    for proj in ("q_proj", "k_proj", "v_proj", "c_proj"):
        yield Row(f"visual.attnpool.{proj}.weight", "params", a + (proj, "kernel"), "linear")
        yield Row(f"visual.attnpool.{proj}.bias", "params", a + (proj, "bias"))


def _vit_rows(vision: VisionConfig) -> Iterator[Row]:
    v = ("visual",)
    yield Row("visual.conv1.weight", "params", v + ("conv1", "kernel"), "conv")
    yield Row("visual.class_embedding", "params", v + ("class_embedding",))
    yield Row("visual.positional_embedding", "params", v + ("positional_embedding",))
    yield from layer_norm_rows("visual.ln_pre", v + ("ln_pre",))
    yield from _transformer_rows("visual.", v, vision.layers)
    yield from layer_norm_rows("visual.ln_post", v + ("ln_post",))
    yield Row("visual.proj", "params", v + ("proj",))


def state_dict_rows(config: CLIPConfig) -> list[Row]:
    """OpenAI key -> Flax path, for every parameter of a CLIP-family architecture."""
    table = list(_resnet_rows(config.vision) if config.vision.is_resnet else _vit_rows(config.vision))
    t = ("text",)
    table.append(Row("token_embedding.weight", "params", t + ("token_embedding",)))
    table.append(Row("positional_embedding", "params", t + ("positional_embedding",)))
    table.extend(_transformer_rows("", t, config.text.layers))
    table.extend(layer_norm_rows("ln_final", t + ("ln_final",)))
    table.append(Row("text_projection", "params", t + ("text_projection",)))
    table.append(Row("logit_scale", "params", ("logit_scale",)))
    return table



# -- Hugging Face CLIPModel names ------------------------------------------------------------


_BLOCK_RENAMES = [
    ("attn.out_proj.", "self_attn.out_proj."),
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]
_PLAIN_RENAMES = [  # OpenAI key -> HF key, tensors unchanged
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),  # sic: HF's spelling
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ("logit_scale", "logit_scale"),
]
_TRANSPOSED_RENAMES = [("visual.proj", "visual_projection.weight"), ("text_projection", "text_projection.weight")]
_OPENAI_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")


def is_hf_state_dict(state_dict: Mapping) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in state_dict)


def openai_to_hf(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if any(k.startswith("visual.layer1.") for k in sd):
        raise ValueError("Hugging Face's CLIPModel has no ModifiedResNet tower; export ResNet models as open_clip")
    out = {}
    for openai_key, hf_key in _PLAIN_RENAMES:
        out[hf_key] = sd[openai_key]
    for openai_key, hf_key in _TRANSPOSED_RENAMES:
        out[hf_key] = contiguous(sd[openai_key].T)
    for key, value in sd.items():
        match = _OPENAI_BLOCK.match(key)
        if not match:
            continue
        tower = "vision_model" if match.group(1) else "text_model"
        prefix, rest = f"{tower}.encoder.layers.{match.group(2)}.", match.group(3)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
                out[f"{prefix}self_attn.{name}.{kind}"] = contiguous(part)
            continue
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                out[prefix + new + rest[len(old):]] = value
                break
        else:
            raise ValueError(f"no Hugging Face name for {key!r}")
    return out


def hf_to_openai(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    out, used = {}, set()
    for openai_key, hf_key in _PLAIN_RENAMES:
        if hf_key in sd:
            out[openai_key] = sd[hf_key]
            used.add(hf_key)
    for openai_key, hf_key in _TRANSPOSED_RENAMES:
        if hf_key in sd:
            out[openai_key] = contiguous(sd[hf_key].T)
            used.add(hf_key)
    qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        match = _HF_BLOCK.match(key)
        if not match:
            continue
        used.add(key)
        prefix = ("visual." if match.group(1) == "vision" else "") + f"transformer.resblocks.{match.group(2)}."
        rest = match.group(3)
        q = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if q:
            qkv.setdefault((prefix, q.group(2)), {})[q.group(1)] = value
            continue
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(new):
                out[prefix + old + rest[len(new):]] = value
                break
        else:
            out[key] = value  # reported as unexpected by the Flax mapping
    for (prefix, kind), parts in qkv.items():
        out[f"{prefix}attn.in_proj_{kind}"] = pack_qkv_parts(parts, f"{prefix} {kind}")
    for key in set(sd) - used:
        out[key] = sd[key]  # reported as unexpected by the Flax mapping
    return out


def config_from_hf(hf: Mapping, source: str = "config.json", folder: str | None = None) -> CLIPConfig:
    """A `CLIPConfig` of a transformers CLIPConfig dict (config.json)."""
    if hf.get("model_type") not in (None, "clip"):
        raise ValueError(f"{source} describes model_type {hf.get('model_type')!r}, not 'clip'")
    try:
        v, t = hf["vision_config"], hf["text_config"]
    except KeyError as error:
        raise ValueError(f"{source} lacks {error.args[0]!r}; not a CLIPModel config") from None
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise ValueError(
            f"hidden_act {sorted(acts)} unsupported; clip_jax supports one of quick_gelu or gelu for both towers"
        )
    for tower in (v, t):
        eps = tower.get("layer_norm_eps", LAYER_NORM_EPS)
        if abs(eps - LAYER_NORM_EPS) > 1e-12:
            raise ValueError(f"layer_norm_eps {eps} unsupported; CLIP uses {LAYER_NORM_EPS}")
    vision = vision_config_from_hf(v, default_patch_size=32)
    text = text_config_from_hf(t, HF_TEXT_DEFAULTS)
    return CLIPConfig(embed_dim=hf.get("projection_dim", 512), vision=vision, text=text, act=acts.pop())


def config_to_hf(config: CLIPConfig, logit_scale_init: float) -> dict:
    if config.vision.is_resnet:
        raise ValueError("Hugging Face's CLIPModel has no ModifiedResNet tower; export ResNet models as open_clip")
    v, t = config.vision, config.text
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": logit_scale_init,
        "torch_dtype": "float32",
        "text_config": {
            **text_config_to_hf(t),
            "hidden_act": config.act,
            "layer_norm_eps": LAYER_NORM_EPS,
            "projection_dim": config.embed_dim,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        "vision_config": {
            **vision_config_to_hf(v),
            "hidden_act": config.act,
            "layer_norm_eps": LAYER_NORM_EPS,
            "projection_dim": config.embed_dim,
        },
    }



# -- architecture from shapes ---------------------------------------------------------------


def _count_indices(keys, prefix: str, position: int) -> int:
    return len({k.split(".")[position] for k in keys if k.startswith(prefix)})


def infer_config(state_dict: Mapping[str, np.ndarray]) -> CLIPConfig:
    """The architecture of an OpenAI-named state dict (without DDP prefixes or buffers:
    clip_jax.convert.table.normalize_state_dict), read from tensor shapes as OpenAI's
    `build_model` does.

    Shapes do not show the attention heads or the activation.  When the shapes match a
    registered model, its heads and activation are used (OpenAI's models first, so
    OpenAI's archives get QuickGELU); otherwise heads are width/64 and QuickGELU.
    """
    sd = state_dict
    for required in ("text_projection", "token_embedding.weight", "positional_embedding", "ln_final.weight"):
        if required not in sd:
            raise ValueError(
                f"cannot infer the architecture: key {required!r} is missing "
                f"(keys present: {shapes_text(sd, list(sd)[:20])}{' ...' if len(sd) > 20 else ''})"
            )
    keys = list(sd)
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1))
        mlp = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        vision = VisionConfig(
            image_size=patch * grid,
            width=width,
            layers=sum(1 for k in keys if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")),
            patch_size=patch,
            mlp_ratio=mlp / width if mlp != 4 * width else 4.0,
        )
    elif "visual.layer1.0.conv1.weight" in sd:
        rows_ = sd["visual.attnpool.positional_embedding"].shape[0]
        grid = round(math.sqrt(rows_ - 1))
        if grid * grid + 1 != rows_:
            raise ValueError(f"visual.attnpool.positional_embedding has {rows_} rows, not a square grid plus one")
        vision = VisionConfig(
            image_size=32 * grid,
            width=sd["visual.layer1.0.conv1.weight"].shape[0],
            layers=tuple(_count_indices(keys, f"visual.layer{b}.", 2) for b in range(1, 5)),
            patch_size=None,
        )
    else:
        raise ValueError(
            "cannot infer the image tower: neither 'visual.proj' (ViT) nor "
            "'visual.layer1.0.conv1.weight' (ModifiedResNet) is in the checkpoint"
        )
    text_width = sd["ln_final.weight"].shape[0]
    text_mlp = sd.get("transformer.resblocks.0.mlp.c_fc.weight")
    text = TextConfig(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_width // 64,
        layers=_count_indices(keys, "transformer.resblocks.", 2),
        mlp_ratio=4.0 if text_mlp is None or text_mlp.shape[0] == 4 * text_width else text_mlp.shape[0] / text_width,
    )
    return match_registered(CLIPConfig(embed_dim=sd["text_projection"].shape[1], vision=vision, text=text))


def _shape_signature(config: CLIPConfig) -> CLIPConfig:
    """The config with what shapes cannot show (heads, activation) blanked out."""
    vision = dataclasses.replace(config.vision, head_width=0, mlp_ratio=float(config.vision.mlp_dim))
    text = dataclasses.replace(config.text, heads=0, mlp_ratio=float(config.text.mlp_dim))
    return dataclasses.replace(config, vision=vision, text=text, act="")


def match_registered(config: CLIPConfig) -> CLIPConfig:
    """The registered CLIP-family architecture with the same shapes (OpenAI's first), else `config`."""
    signature = _shape_signature(config)
    for known in MODELS.values():
        if _shape_signature(known) == signature:
            return known
    return config


def activation_warning(path: str, config: CLIPConfig) -> str:
    """What reading a bare state dict assumed: tensor shapes cannot tell QuickGELU from GELU."""
    assumed = ("QuickGELU (OpenAI's activation)" if config.act == "quick_gelu"
               else "GELU (as the LAION models of these shapes)")
    name = name_of(config)
    label = f"the {name} architecture" if name else "custom shapes, with OpenAI's 64-wide attention heads"
    return (f"{path}: a bare state dict does not say which activation its model was trained with, and tensor "
            f"shapes cannot tell QuickGELU from GELU; assuming {assumed} for {label}. Choose explicitly with "
            f"name= (an open_clip name such as 'ViT-B-32' is GELU, 'ViT-B-32-quickgelu' and OpenAI's 'ViT-B/32' "
            f"are QuickGELU) or act='gelu' / act='quick_gelu'"
            + ("" if name else ", or give the whole architecture with config= (an open_clip model-config JSON)") + ".")
