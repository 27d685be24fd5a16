"""What every training config starts from: `base_config()`, the defaults of every key
the trainer reads, and `paper_config(model, ...)`, the paper's recipe (its training
details and hyper-parameter tables) for one model.

Not a config itself: the files in configs/ build on these, each with its run command.
"""
from __future__ import annotations

import importlib.util
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
    # "fast" (reduced-scale JPEG decode, one float resize) or "exact" (the earlier, PIL-like crop).
    config.data.options.train_transform = "fast"
    # Images cross to the devices as uint8 (a quarter of float32's bytes) and are
    # normalised inside the train step; False sends normalised float32.
    config.data.options.uint8_images = True
    # Shards (units) interleaved and shuffled together; hosts share these blocks out
    # (clip_jax/data/order.py).  Part of a run's data contract: keep it when resuming.
    config.data.options.units_per_block = 4
    # Debugging and tests: append each batch's captions and epochs to DIR/process-I-of-P.jsonl.
    config.data.options.trace_dir = ""

    # "softmax" (gathered), "softmax_ring", "sigmoid" (SigLIP, on the ring); the plain
    # N x N references "softmax_global" and "sigmoid_dense" are for tests and benchmarks.
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
