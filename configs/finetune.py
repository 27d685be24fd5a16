"""Fine-tune a CLIP or SigLIP checkpoint on a labelled dataset with the one trainer.

    python train.py --config 'configs/finetune.py:DATA,LOSS[,OPTION...]' --workdir /ckpt/ft \\
        --config.model=ViT-B-32 --config.init_from=ViT-B-32:openai \\
        [--config.finetune.class_names=cifar10 --config.finetune.templates=cifar10]

DATA: any labelled source clip_jax reads (`folder:/data/train`, `tfds:cifar10:train`,
`wds:/data/{00000..00099}.tar` with .cls members).  The class names are the dataset's
own (folder names, a TFDS ClassLabel) unless finetune.class_names gives them (a shipped
key, a file, a list: as eval.py's --class_names); their count must be the data's.
LOSS, one of:
  * `flyp` (Goyal et al. 2023): the pretraining contrastive loss on (image, caption)
    pairs whose caption is a template filled with the image's class name, one template
    drawn per example; two examples whose captions are identical are not each other's
    negatives (clip_jax/losses.py says why).  Both towers train.
  * `ce`: cross-entropy of a head on the image tower, the head initialised as the
    zero-shot classifier (prompt ensemble x logit scale), as WiSE-FT fine-tunes
    end to end; the text tower is held fixed.  Option `lp_ft`: the head starts as a
    linear probe on the frozen features of the training data instead (LP-FT).
Options: `lp_ft`; `lock_image` / `lock_text` (LiT-style: that tower gets no update);
`model=NAME` and `init=SPEC` (shorthands for --config.model / --config.init_from);
`runlocal` (a 3-step float32 CPU smoke run on the same data).

Defaults follow WiSE-FT's and FLYP's ImageNet recipes, scaled to a config: AdamW (b2
0.999, eps 1e-8, wd 0.1), batch 512, 500 warm-up steps then cosine, lr 3e-5 (ce) or 1e-5
(flyp), 10 epochs where the data's size is known cheaply (else set --config.total_steps).
Further keys: optim.layer_decay, finetune.label_smoothing (ce), finetune.probe_examples
(lp_ft), evals (e.g. the in-distribution test set and shifted sets, with task zeroshot:
a ce run scores them with its head).
"""
from clip_jax.train_config import base_config

LOSSES = {"flyp": "flyp", "ce": "cross_entropy"}
FLAGS = ("lp_ft", "lock_image", "lock_text", "runlocal")
VALUES = ("model", "init")


def get_config(arg=None):
    data, *options = (arg or "").split(",")
    losses = [o for o in options if o in LOSSES]
    values = dict(o.split("=", 1) for o in options if "=" in o and o.split("=", 1)[0] in VALUES)
    unknown = [o for o in options if o not in LOSSES and o not in FLAGS and o.split("=", 1)[0] not in VALUES]
    if not data or len(losses) != 1 or unknown:
        raise ValueError(f"argument {arg!r}: expected DATA,LOSS[,OPTION...] with DATA a labelled dataset spec, LOSS "
                         f"one of {', '.join(LOSSES)}, options among {', '.join(FLAGS)}, "
                         f"{', '.join(v + '=...' for v in VALUES)}" + (f"; unknown: {unknown}" if unknown else ""))
    config = base_config()
    config.loss = LOSSES[losses[0]]
    config.data.train = data
    config.model = values.get("model", config.model)
    config.init_from = values.get("init", "")
    config.finetune.lp_ft = "lp_ft" in options
    config.batch_size = 512
    config.optim.lr = 3e-5 if config.loss == "cross_entropy" else 1e-5
    config.optim.wd = 0.1
    config.optim.b2, config.optim.eps = 0.999, 1e-8
    config.optim.warmup_steps = 500
    config.data.options.crop_scale = (0.9, 1.0)
    config.checkpoint_every = 500
    config.log_every = 50
    config.eval_every = 1000
    frozen = []
    if "lock_image" in options:
        frozen.append(r"^visual/")
    if "lock_text" in options:
        frozen.append(r"^text/")
    config.optim.frozen = tuple(frozen)
    size = _cheap_size(data)
    if size:
        config.data.num_examples, config.epochs = size, 10.0
    else:
        config.total_steps = 1000
    if "runlocal" in options:
        config.batch_size, config.epochs, config.total_steps = 16, 0.0, 3
        config.optim.warmup_steps = 1
        config.compute_dtype = "float32"
        config.data.options.shuffle_buffer = 256
        config.log_every = 1
        config.checkpoint_every = 3
        config.finetune.probe_examples = 64
    return config


CHEAP_KINDS = ("folder", "csv", "demo")  # sources whose size is a file listing away


def _cheap_size(spec: str) -> int:
    """The dataset's example count where its sources know it without reading the data
    (folders, CSV); 0 otherwise (shards would have to be read through)."""
    from clip_jax import data
    from clip_jax.data import dataset_spec

    try:
        if any(source.kind not in CHEAP_KINDS for source in dataset_spec.parse(spec)):
            return 0
        labels = data.dataset_labels(spec)
    except (ValueError, OSError):
        return 0
    return 0 if labels is None else len(labels)
