"""What a model family is: the contract every family module fills in, and the registry.

A family (CLIP, SigLIP, ...) is everything that follows from "which project's models
these are" beyond the dimensions in `CLIPConfig`: how its towers are built, its
LayerNorm epsilon, how images are resized and normalised, which tokenizers and token
layout its text tower takes, its default prompt template, how it scores (softmax over
classes or a sigmoid per class) with which temperature and bias, and how its parameters
are named in other projects' files.  Code elsewhere asks the family (`family_of(config)`)
instead of comparing names, so a new family is one module plus one `register` line in
`clip_jax/models/families/__init__.py`.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Family(abc.ABC):
    """The contract; family modules subclass it and register one instance.  The abstract
    methods are what every family must define (a subclass missing one cannot be made)."""

    name: str = ""  # what CLIPConfig.family stores
    title: str = ""  # the name in messages
    layer_norm_eps: float = 1e-5
    # The evaluation transform's resize: "crop" (shorter side to the size, centre crop:
    # the aspect ratio kept) or "squash" (the whole image to size x size).
    resize: str = "crop"
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tower_kinds: tuple[str, ...] = ("vit",)  # VisionConfig.tower values this family builds
    tokenizers: tuple[str, ...] = ("bpe",)  # TextConfig.tokenizer values it accepts
    # The token contract: True when every row must be exactly context_length ids (the
    # padding is part of the input); False when any length up to it is accepted.
    pads_to_context: bool = False
    # Whether host token batches may be cut after their last EOT (a causal tower pooled
    # at EOT gives the same features from fewer positions).
    trims_text: bool = False
    # Whether an image size that leaves a remainder of patches is accepted (the patch
    # convolution drops it) or is a mistake.
    partial_patches: bool = False
    default_template: str = "a photo of a {}."
    # How a model of this family scores image-text pairs unless trained otherwise: a
    # name in clip_jax.models.scoring.SCORING_RULES, which also sets the temperature's
    # (and bias's) initial values and cap.
    scoring: str = "softmax"

    # -- architecture ------------------------------------------------------------------
    def check_config(self, config) -> None:
        """ValueError naming what this family cannot build (after the generic checks)."""

    @abc.abstractmethod
    def build_towers(self, config, *, dtype: Any, remat: bool, patch_dropout: float, full_last_block: bool,
                     kernels) -> tuple[Any, Any]:
        """(image tower, text tower) Flax modules for `config`."""

    def token_error(self, shape: tuple, context_length: int) -> str | None:
        """Why int tokens of `shape` cannot feed this family's text tower, or None."""
        if len(shape) != 2:
            return f"tokens must be [batch, length] integers; got shape {shape}"
        if self.pads_to_context and shape[1] != context_length:
            return (f"tokens have shape {shape}; expected integer ids [batch, {context_length}] padded to the full "
                    f"{context_length} positions, as {self.title} models were trained")
        if shape[1] > context_length:
            return (f"tokens have shape {shape}; expected integer ids [batch, {context_length}] (or fewer "
                    "positions)")
        return None

    def trim_text(self, tokens: np.ndarray) -> np.ndarray:
        """Host tokens as the text tower may take them (families with `trims_text` cut
        them after the batch's last EOT)."""
        return np.asarray(tokens)

    # -- checkpoint conversion (clip_jax.convert applies these) ---------------------------
    # The formats `export_checkpoint` can write this family's models as.
    export_formats: tuple[str, ...] = ("clip_jax",)
    hf_model_types: tuple[str, ...] = ()  # transformers config.json model_type values it reads
    hf_architecture: str = ""  # the transformers class its Hugging Face folders load as

    @abc.abstractmethod
    def state_dict_rows(self, config) -> list:
        """Rows (naming.Row) naming every parameter in this family's torch state dicts."""

    def recognises(self, state_dict) -> bool:
        """Whether a bare torch state dict is one of this family's (by its key names)."""
        return False

    def own_names(self, state_dict) -> dict:
        """A state dict (its own or Hugging Face's names) renamed to the rows' names."""
        return dict(state_dict)

    def hf_names(self, state_dict) -> dict:
        """A state dict with the rows' names renamed to Hugging Face's."""
        raise ValueError(f"{self.name} models have no Hugging Face layout here")

    @abc.abstractmethod
    def infer_config(self, state_dict):
        """The architecture a state dict with the rows' names has, read from its shapes."""

    def shape_inference_warning(self, path: str, config) -> str | None:
        """What reading `config` from a bare state dict's shapes had to assume, for the
        user to confirm (None: the shapes settle everything)."""
        return None

    @abc.abstractmethod
    def config_from_hf(self, hf: dict, source: str, folder: str | None = None):
        """The `CLIPConfig` of a transformers config.json dict."""

    @abc.abstractmethod
    def config_to_hf(self, config, logit_scale: float) -> dict:
        """The transformers config.json dict of an architecture."""

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; valid: {', '.join(FAMILIES)}") from None


def family_of(thing) -> Family:
    """The family of a model, a `CLIPConfig` or a family name."""
    if isinstance(thing, Family):
        return thing
    if isinstance(thing, str):
        return get_family(thing)
    config = getattr(thing, "config", thing)
    return get_family(config.family)
