"""OpenAI / open_clip state dicts <-> clip_jax variables.

open_clip keeps OpenAI's parameter names for these architectures, so one table serves
both.  The table is generated from a `CLIPConfig`: one row per torch key, naming the
Flax collection and path it maps to, the layer index when the path is a scanned
(stacked) transformer parameter, and the layout change.  Import and export both read
the same rows, so they cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterator, Mapping

import numpy as np

from clip_jax.convert.safetensors_io import contiguous
from clip_jax.models.config import CLIPConfig, TextConfig, VisionConfig
from clip_jax.models.registry import MODELS
from clip_jax.models.spec import check_config

# Keys OpenAI's archives and older open_clip files carry that are not parameters.
IGNORED_KEYS = re.compile(
    r"^(input_resolution|context_length|vocab_size|attn_mask|visual\.attn_mask|logit_bias_unused)$"
    r"|num_batches_tracked$|position_ids$"
)


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # torch state-dict key
    collection: str  # "params" or "batch_stats"
    path: tuple[str, ...]  # path inside the collection
    layout: str = "copy"  # "copy", "linear" (transpose), "conv" (OIHW <-> HWIO), "scalar" ([1] <-> [])
    layer: int | None = None  # index along the scanned layer axis


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


def _layer_norm_rows(key: str, path: tuple[str, ...]) -> Iterator[Row]:
    yield Row(key + ".weight", "params", path + ("scale",))
    yield Row(key + ".bias", "params", path + ("bias",))


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
    yield from _layer_norm_rows("visual.ln_pre", v + ("ln_pre",))
    yield from _transformer_rows("visual.", v, vision.layers)
    yield from _layer_norm_rows("visual.ln_post", v + ("ln_post",))
    yield Row("visual.proj", "params", v + ("proj",))


def rows(config: CLIPConfig) -> list[Row]:
    """The full mapping table of an architecture (SigLIP's: clip_jax.convert.siglip)."""
    if config.family == "siglip":
        from clip_jax.convert.siglip import siglip_rows

        return siglip_rows(config)
    table = list(_resnet_rows(config.vision) if config.vision.is_resnet else _vit_rows(config.vision))
    t = ("text",)
    table.append(Row("token_embedding.weight", "params", t + ("token_embedding",)))
    table.append(Row("positional_embedding", "params", t + ("positional_embedding",)))
    table.extend(_transformer_rows("", t, config.text.layers))
    table.extend(_layer_norm_rows("ln_final", t + ("ln_final",)))
    table.append(Row("text_projection", "params", t + ("text_projection",)))
    table.append(Row("logit_scale", "params", ("logit_scale",)))
    return table


def _to_flax(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return array.T
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    if layout == "scalar":
        return array.reshape(())
    return array


def _to_torch(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return array.T
    if layout == "conv":
        return array.transpose(3, 2, 0, 1)
    if layout == "scalar":
        return array.reshape((1,))
    return array


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
    for name in path:
        tree = tree[name]
    return tree


def _shape_str(sd: Mapping[str, np.ndarray], keys) -> str:
    return ", ".join(f"{k} {tuple(np.shape(sd[k]))}" for k in sorted(keys)) or "none"


def normalize_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip DDP's 'module.' prefix and drop buffers that are not parameters."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if IGNORED_KEYS.search(key):
            continue
        out[key] = np.asarray(value)
    return out


def expected_shapes(config: CLIPConfig) -> dict[str, tuple[int, ...]]:
    """Torch-layout shape of every key of an architecture, derived from the model."""
    import jax
    import jax.numpy as jnp

    from clip_jax.models import create_model

    model = create_model(config)
    size = config.vision.image_size
    shapes = jax.eval_shape(
        model.init,
        jax.random.PRNGKey(0),
        jnp.zeros((1, size, size, 3)),
        jnp.zeros((1, config.text.context_length), jnp.int32),
    )
    out = {}
    for row in rows(config):
        shape = _get(shapes[row.collection], row.path).shape
        if row.layer is not None:
            shape = shape[1:]
        if row.layout == "linear":
            shape = shape[::-1]
        elif row.layout == "conv":
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif row.layout == "scalar":
            shape = (1,)
        out[row.key] = tuple(shape)
    return out


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], config: CLIPConfig) -> dict:
    """Flax variables ({'params': ..., ['batch_stats': ...]}) of a torch state dict.

    Raises ValueError listing missing and unexpected keys and shape mismatches, with
    shapes, when the tensors do not fit the architecture.
    """
    sd = normalize_state_dict(state_dict)
    table = rows(config)
    expected = expected_shapes(config)
    missing = [r.key for r in table if r.key not in sd]
    unexpected = sorted(set(sd) - set(expected))
    wrong = [k for k, shape in expected.items() if k in sd and tuple(sd[k].shape) != shape]
    if missing or unexpected or wrong:
        raise ValueError(
            "checkpoint does not fit the architecture "
            f"(embed_dim={config.embed_dim}, vision={config.vision}, text={config.text}):\n"
            f"  missing keys ({len(missing)}): {', '.join(f'{k} {expected[k]}' for k in missing[:40]) or 'none'}"
            f"{' ...' if len(missing) > 40 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {_shape_str(sd, unexpected[:40])}\n"
            f"  wrong shapes ({len(wrong)}): "
            + (", ".join(f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in wrong[:40]) or "none")
        )
    variables: dict = {}
    stacks: dict[tuple, list] = {}
    for row in table:
        value = _to_flax(sd[row.key].astype(np.float32, copy=False), row.layout)
        if row.layer is None:
            _set(variables, (row.collection,) + row.path, value)
        else:
            stacks.setdefault((row.collection,) + row.path, []).append(value)
    for path, layers in stacks.items():
        _set(variables, path, np.stack(layers))
    return variables


def variables_to_state_dict(variables: Mapping, config: CLIPConfig) -> dict[str, np.ndarray]:
    """A torch-layout state dict (OpenAI / open_clip names) of Flax variables."""
    sd = {}
    for row in rows(config):
        value = np.asarray(_get(variables[row.collection], row.path), dtype=np.float32)
        if row.layer is not None:
            value = value[row.layer]
        sd[row.key] = contiguous(_to_torch(value, row.layout))
        if row.key.endswith(".running_var"):
            sd[row.key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return sd


def _count_indices(keys, prefix: str, position: int) -> int:
    return len({k.split(".")[position] for k in keys if k.startswith(prefix)})


def infer_config(state_dict: Mapping[str, np.ndarray]) -> CLIPConfig:
    """The architecture of an OpenAI-named state dict, read from tensor shapes as
    OpenAI's `build_model` does.

    Shapes do not show the attention heads or the activation.  When the shapes match a
    registered model, its heads and activation are used (OpenAI's models first, so
    OpenAI's archives get QuickGELU); otherwise heads are width/64 and QuickGELU.
    """
    sd = normalize_state_dict(state_dict)
    for required in ("text_projection", "token_embedding.weight", "positional_embedding", "ln_final.weight"):
        if required not in sd:
            raise ValueError(
                f"cannot infer the architecture: key {required!r} is missing "
                f"(keys present: {_shape_str(sd, list(sd)[:20])}{' ...' if len(sd) > 20 else ''})"
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
    text = TextConfig(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_width // 64,
        layers=_count_indices(keys, "transformer.resblocks.", 2),
    )
    inferred = match_registered(CLIPConfig(embed_dim=sd["text_projection"].shape[1], vision=vision, text=text))
    try:
        check_config(inferred)
    except ValueError as error:
        raise ValueError(
            f"the architecture read from tensor shapes, with OpenAI's 64-wide attention heads, is not "
            f"valid ({error}); shapes do not show the heads: give the architecture with config= (an "
            "open_clip model-config JSON or dimensions) or name="
        ) from None
    return inferred


def _shape_signature(config: CLIPConfig) -> CLIPConfig:
    """The config with what shapes cannot show (heads, activation) blanked out."""
    vision = dataclasses.replace(config.vision, head_width=0, mlp_ratio=float(config.vision.mlp_dim))
    return dataclasses.replace(config, vision=vision, text=dataclasses.replace(config.text, heads=0), act="")


def match_registered(config: CLIPConfig) -> CLIPConfig:
    signature = _shape_signature(config)
    for known in MODELS.values():
        if _shape_signature(known) == signature:
            return known
    return config
