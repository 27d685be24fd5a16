"""Fine-tune a SigLIP or SigLIP 2 checkpoint with its own sigmoid loss.

    python train.py --config configs/siglip_finetune.py:/ckpt/siglip-base-patch16-224 --workdir /ckpt/siglip_ft \
        --config.data.train='wds:/data/pairs/{00000..00099}.tar' --config.total_steps=5000

The argument is a Hugging Face SiglipModel folder (config.json, model.safetensors and the
tokenizer's spiece.model, or tokenizer.model for SigLIP 2) of a registered architecture
(`clip_jax.available_models()`: siglip-* and siglip2-*).  The run starts from its weights,
temperature and bias, tokenises captions with its tokenizer padded to its context length,
and feeds images as SigLIP was trained (squashed to the model's size, scaled to [-1, 1]).
Append ",lit" to lock the image tower (LiT: only the text tower learns), ",runlocal"
for a 3-step CPU smoke run on demo data (e.g. `siglip_finetune.py:/ckpt/siglip,lit,runlocal`).
"""
from clip_jax.convert import hf
from clip_jax.models import family_of, name_of
from clip_jax.train_config import base_config, shrink_to_local_run

OPTIONS = ("lit", "runlocal")
TUNES = ("siglip",)  # the model families this recipe is for


def get_config(arg=None):
    folder, *options = (arg or "").split(",")
    if not folder or any(option not in OPTIONS for option in options):
        raise ValueError(f"argument {arg!r}: expected a SigLIP Hugging Face folder, optionally followed by "
                         f"{', '.join(',' + o for o in OPTIONS)}")
    architecture = hf.read_config(folder)
    name = name_of(architecture)
    if architecture.family not in TUNES or name is None:
        raise ValueError(f"{folder} holds {'an unregistered' if name is None else name} architecture; this config "
                         "fine-tunes the registered SigLIP ones (siglip-*, siglip2-*)")
    config = base_config()
    config.model = name
    config.init_from = folder
    config.loss = family_of(architecture).scoring  # "sigmoid": on the device ring, memory local x local
    config.data.options.tokenizer = f"{architecture.text.tokenizer}:{folder}"
    config.batch_size = 4096
    config.total_steps = 5000
    config.optim.lr = 1e-5
    config.optim.wd = 1e-4
    config.optim.b2 = 0.95
    config.optim.warmup_steps = 500
    config.checkpoint_every = 500
    config.log_every = 50
    if "lit" in options:
        config.optim.frozen = (r"^visual/",)
    if "runlocal" in options:
        shrink_to_local_run(config)
    return config
