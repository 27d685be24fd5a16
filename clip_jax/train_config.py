"""The training config: `base_config()`, every key the trainer reads with its default
(the one place defaults live), `checked(config, devices, processes)`, the config the
trainer runs (the defaults under it, unknown keys refused, every value validated once,
before anything compiles; `complete` and `validate` are its two halves), and
`paper_config(model, ...)`, the paper's recipe (its training details and hyper-parameter
tables) for one model.

Not a config itself: the files in configs/ build on these, each with its run command,
and each takes the argument "runlocal" for a short CPU run on the demo data.
"""
from __future__ import annotations

import importlib.util
import math
import os
import types

import ml_collections

from clip_jax.optim import NO_DECAY
from clip_jax.sharding import DEFAULT_RULES


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # A registered name ("ViT-B/32", "ViT-B-32", ...), a ConfigDict of dimensions (embed_dim,
    # act, vision: image_size/width/layers/patch_size/head_width/mlp_ratio, text:
    # context_length/vocab_size/width/heads/layers; configs/custom_vit.py) or the path of an
    # open_clip model-config JSON. Any type: a name here can become dimensions in a config.
    config.model = ml_collections.FieldReference("ViT-B/32", field_type=object)
    config.compute_dtype = "bfloat16"  # parameters stay float32; LayerNorm runs in float32
    config.remat = False
    # "auto": cuDNN flash attention on NVIDIA GPUs when the dtype and head sizes allow it,
    # XLA elsewhere; "xla"; "cudnn" (an error where it cannot run).
    config.attention = "auto"
    config.patch_dropout = 0.0  # FLIP: fraction of image patches dropped in training (ViTs)
    config.patch_dropout_unmasked_steps = 0  # final steps trained without patch dropout
    config.seed = 0

    config.batch_size = 32768  # global, over all hosts and devices
    # k > 1: embedding-cache accumulation over k micro-batches (all k*B negatives, the
    # activation memory of one micro-batch); see clip_jax/gradients.py.
    config.accumulation_steps = 1
    # Cut each batch's tokens after its last EOT (rounded up to 16 positions): the same
    # loss and gradients, less text-tower work; a compilation per length seen (<= 5).
    # "auto": single-process runs on one device or on accelerators (hosts would have to
    # agree on the length; see trainer.trimming_is_safe); "always"; "never".
    config.trim_text = "auto"
    # Training length: exactly one of these > 0 (epochs needs data.num_examples).
    config.total_steps = 0
    config.total_examples = 0
    config.epochs = 0.0

    config.data = ml_collections.ConfigDict()
    config.data.train = "wds:/path/to/shards-{00000..41407}.tar"
    config.data.num_examples = 0
    config.data.options = ml_collections.ConfigDict()
    config.data.options.crop_scale = (0.9, 1.0)
    config.data.options.shuffle_buffer = 10_000
    config.data.options.tokenizer = "bpe"
    # "device": the host decodes each crop window (at a reduced JPEG DCT scale) and the
    # train step resizes it on the accelerator (clip_jax/window_resize.py); "fast": the
    # same crop finished on the host; "exact": the earlier, PIL-like crop on the host.
    config.data.options.train_transform = "device"
    # "fast"/"exact" crops cross to the devices as uint8 (a quarter of float32's bytes) and
    # are normalised inside the train step; False sends normalised float32.
    config.data.options.uint8_images = True
    # Shards (units) interleaved and shuffled together; hosts share these blocks out
    # (clip_jax/data/order.py).  Part of a run's data contract: keep it when resuming.
    config.data.options.units_per_block = 4
    # Debugging and tests: append each batch's captions and epochs to DIR/process-I-of-P.jsonl.
    config.data.options.trace_dir = ""

    # "softmax" (gathered), "softmax_ring", "sigmoid" (SigLIP, on the ring); for labelled
    # data "flyp" (softmax on class-prompt captions, duplicate captions not negatives) and
    # "cross_entropy" (a head on the image tower; see `finetune`).  The plain N x N
    # references "softmax_global", "sigmoid_dense" and "flyp_dense" are for tests and benchmarks.
    config.loss = "softmax"
    config.logit_scale_init = ml_collections.FieldReference(None, field_type=float)  # None: by loss
    config.logit_bias_init = ml_collections.FieldReference(None, field_type=float)  # sigmoid: -10

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 5e-4
    config.optim.wd = 0.2
    config.optim.b1 = 0.9
    config.optim.b2 = 0.98
    config.optim.eps = 1e-6
    config.optim.warmup_steps = 2000
    config.optim.end_lr_factor = 0.0
    config.optim.grad_clip = 0.0
    config.optim.no_decay = NO_DECAY  # gains, biases, embeddings, temperature
    config.optim.frozen = ()  # regexes of parameters that are not trained
    # Layer-wise lr decay (BEiT/ELECTRA style): block l of a tower's L gets lr * decay^(L - l),
    # its embeddings decay^(L + 1), everything after the blocks the full lr.  1.0: off.
    config.optim.layer_decay = 1.0

    # LoRA (clip_jax/lora.py): adapters of rank `rank` on the kernels these regexes over
    # '/'-joined parameter paths select (e.g. r"^visual/transformer/blocks/attn/"); only they
    # (and a classification head) train.  () = no adapters.
    config.lora = ml_collections.ConfigDict()
    config.lora.targets = ()
    config.lora.rank = 8
    config.lora.alpha = 16.0

    # Fine-tuning on labelled data (loss "flyp" or "cross_entropy"; configs/finetune.py).
    config.finetune = ml_collections.ConfigDict()
    # As eval.py's --class_names and --templates: a shipped dataset key ("cifar10"), a file
    # (one per line), or a list; "" = the dataset's own class names / the family's template.
    config.finetune.class_names = ml_collections.FieldReference("", field_type=object)
    config.finetune.templates = ml_collections.FieldReference("", field_type=object)
    config.finetune.lp_ft = False  # cross_entropy: the head starts as a linear probe (LP-FT), not zero-shot
    config.finetune.probe_examples = 10_000  # LP-FT: training examples the probe is fitted on
    config.finetune.label_smoothing = 0.0  # cross_entropy only

    # Mesh axes (name, size); one size may be -1. The batch is split over data x fsdp.
    config.mesh = (("data", -1), ("fsdp", 1))
    # (regex over '/'-joined state paths, "replicate" | "fsdp"); first match wins.
    config.sharding_rules = DEFAULT_RULES

    config.log_every = 50
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.eval_every = 5000
    # Evaluations run every eval_every steps and at the end, e.g.
    # ConfigDict(name="in1k", task="zeroshot", data="tfds:imagenet2012:validation",
    #            templates=("a photo of a {}.",), batch_size=256)
    config.evals = ()
    config.on_nonfinite = "stop"  # or "skip": drop the update, count it, go on
    config.init_from = ""  # any file clip_jax.load_checkpoint reads, for fine-tuning
    config.peak_flops = 0.0  # per device, for MFU where the device is not in the built-in table
    return config


# Sections whose keys are open: data.options are train_iterator's keyword arguments,
# checked there.  (evals is one value, a tuple of specs, checked by their tasks.)
OPEN_SECTIONS = ("data.options",)
TRIM_TEXT = ("auto", "always", "never")
ON_NONFINITE = ("stop", "skip")


def _overlay(defaults: ml_collections.ConfigDict, given, where: str = "") -> None:
    """Set `given`'s values on `defaults` (type-checked by ml_collections), refusing keys
    base_config does not have."""
    for key in given.keys():
        path = f"{where}{key}"
        value = given[key]
        if key not in defaults:
            if where.rstrip(".") in OPEN_SECTIONS:
                defaults[key] = value
                continue
            valid = ", ".join(sorted(where + k for k in defaults.keys()))
            raise ValueError(f"unknown config key {path!r}; valid: {valid}")
        if isinstance(defaults[key], ml_collections.ConfigDict) and isinstance(value, ml_collections.ConfigDict) \
                and path != "model":
            _overlay(defaults[key], value, path + ".")
        else:
            defaults[key] = value


def complete(config) -> ml_collections.ConfigDict:
    """`config` over base_config()'s defaults: every key present, unknown keys refused.
    Everything downstream reads keys without fallbacks."""
    full = base_config()
    _overlay(full, config)
    return full


def checked(config, devices: int, processes: int) -> ml_collections.ConfigDict:
    """The config a run uses: `complete(config)`, validated for a run whose global batch
    is split over `devices` devices and `processes` processes."""
    full = complete(config)
    validate(full, devices, processes)
    return full


def total_steps(config) -> int:
    """The run's length in steps, from whichever of total_steps, total_examples, epochs is set."""
    given = {k: config[k] for k in ("total_steps", "total_examples", "epochs")}
    chosen = [k for k, v in given.items() if v]
    if len(chosen) != 1:
        raise ValueError(f"set exactly one of total_steps, total_examples, epochs (> 0); got {given}")
    if chosen == ["total_steps"]:
        return int(config.total_steps)
    if chosen == ["total_examples"]:
        return math.ceil(config.total_examples / config.batch_size)
    if not config.data.num_examples:
        raise ValueError("epochs needs config.data.num_examples (the training set size)")
    return math.ceil(config.epochs * config.data.num_examples / config.batch_size)


def validate(config, devices: int, processes: int) -> None:
    """Every check that must fail before anything compiles, naming the key and what is valid."""
    from clip_jax import losses
    from clip_jax.evaluation import tasks

    if config.batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {config.batch_size}")
    if config.batch_size % devices:
        raise ValueError(
            f"global batch_size {config.batch_size} is not divisible by the {devices} devices of the batch axes; "
            f"use a multiple of {devices}"
        )
    if config.batch_size % processes:
        raise ValueError(f"global batch_size {config.batch_size} is not divisible by {processes} processes")
    total_steps(config)
    optim = config.optim
    for key in ("lr", "wd", "eps", "grad_clip", "warmup_steps"):
        if optim[key] < 0:
            raise ValueError(f"optim.{key} must be >= 0; got {optim[key]}")
    for key in ("b1", "b2"):
        if not 0 <= optim[key] < 1:
            raise ValueError(f"optim.{key} must be in [0, 1); got {optim[key]}")
    steps = config.accumulation_steps
    if steps < 1 or config.batch_size % (steps * devices):
        raise ValueError(
            f"accumulation_steps {steps} must be >= 1 and divide the global batch {config.batch_size} into "
            f"micro-batches divisible by the {devices} devices"
        )
    if not 0.0 < optim.layer_decay <= 1.0:
        raise ValueError(f"optim.layer_decay must be in (0, 1] (1: no decay); got {optim.layer_decay}")
    validate_finetune(config)
    validate_lora(config.lora)
    if not 0.0 <= config.patch_dropout < 1.0:
        raise ValueError(f"patch_dropout must be in [0, 1); got {config.patch_dropout}")
    losses.model_options(config.loss, config.logit_scale_init, config.logit_bias_init)
    if config.trim_text not in TRIM_TEXT:
        raise ValueError(f"trim_text {config.trim_text!r} unknown; valid: {', '.join(TRIM_TEXT)}")
    if config.on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite {config.on_nonfinite!r} unknown; valid: {', '.join(map(repr, ON_NONFINITE))}")
    tasks.validate_all(config.evals)


def validate_finetune(config) -> None:
    """The fine-tuning keys, by the loss they go with (the data's classes are checked
    against the class names when the trainer builds, before anything compiles)."""
    from clip_jax import losses
    from clip_jax.evaluation.prompts import resolve_class_names, resolve_templates

    finetune, spec = config.finetune, losses.loss_spec(config.loss)
    labelled = spec.classification or spec.uses_caption_keys
    if not 0.0 <= finetune.label_smoothing < 1.0:
        raise ValueError(f"finetune.label_smoothing must be in [0, 1); got {finetune.label_smoothing}")
    if finetune.label_smoothing and not spec.classification:
        raise ValueError(f"finetune.label_smoothing={finetune.label_smoothing} needs loss='cross_entropy'; "
                         f"the loss is {config.loss!r}")
    if finetune.lp_ft and not spec.classification:
        raise ValueError(f"finetune.lp_ft needs loss='cross_entropy' (a head to probe); the loss is {config.loss!r}")
    if finetune.probe_examples < 1:
        raise ValueError(f"finetune.probe_examples must be positive; got {finetune.probe_examples}")
    if (finetune.class_names or finetune.templates) and not labelled:
        raise ValueError(f"finetune.class_names / templates are for labelled data (loss 'flyp' or "
                         f"'cross_entropy'); the loss is {config.loss!r}")
    if finetune.class_names:
        resolve_class_names(finetune.class_names)
    if finetune.templates:
        resolve_templates(finetune.templates)
    if spec.classification and config.patch_dropout:
        raise ValueError("patch_dropout is for contrastive training; set it to 0 with loss='cross_entropy'")


def validate_lora(section) -> None:
    """The LoRA keys (whether each target matches a kernel is checked when the trainer
    builds the model's parameter tree, before anything compiles)."""
    import re

    for pattern in section.targets:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"lora target {pattern!r} is not a regex: {error}") from None
    if section.targets and (not isinstance(section.rank, int) or section.rank < 1):
        raise ValueError(f"lora.rank must be a positive integer; got {section.rank!r}")
    if section.targets and not section.alpha > 0:
        raise ValueError(f"lora.alpha must be positive; got {section.alpha}")


def config_file(path: str) -> types.ModuleType:
    """A config file (configs/NAME.py) imported as a module by its path, as
    `train.py --config` reads it; for configs that build on another one."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shrink_to_local_run(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` as a 3-step float32 smoke run on the demo data, for a CPU: what a config's
    "runlocal" argument does."""
    config.batch_size = 16
    config.epochs = 0.0
    config.total_steps = 3
    config.optim.warmup_steps = 1
    config.compute_dtype = "float32"
    config.data.train = "demo:train"
    config.data.options.shuffle_buffer = 256
    config.log_every = 1
    config.checkpoint_every = 3
    return config


def paper_config(model: str, lr: float, resnet: bool, arg: str | None) -> ml_collections.ConfigDict:
    """The paper's recipe for `model`: batch 32,768, 32 epochs of 400M pairs, AdamW
    (wd 0.2), 2,000 warm-up steps then cosine; beta2/eps 0.98/1e-6 (ViT) or
    0.999/1e-8 (ResNet).  `arg="runlocal"` shrinks it to a CPU smoke run on demo data."""
    config = base_config()
    config.model = model
    config.optim.lr = lr
    if resnet:
        config.optim.b2, config.optim.eps = 0.999, 1e-8
    config.data.num_examples = 400_000_000
    config.epochs = 32.0
    if arg == "runlocal":
        shrink_to_local_run(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; valid: 'runlocal' or none")
    return config
