"""The quick-start demo: a tiny CLIP trained on CPU in minutes on synthetic shapes,
then evaluated zero-shot on colour+shape combinations it never saw in training.

    python train.py --config configs/demo.py --workdir /tmp/clip_demo
    python train.py --config configs/demo.py:runlocal --workdir /tmp/clip_demo_4  # 4 steps

Data: `demo:train` (clip_jax.data.demo): captions like "two small red circles on the
left"; four colour+shape pairs are held out of training.  The final evaluation asks
the model to pick, among all 18 "a {colour} {shape}" prompts, the right one for images
of the held-out pairs only (chance: 1/18 = 5.6%).
"""
import ml_collections

from clip_jax.train_config import base_config


def get_config(arg=None):
    config = base_config()
    config.model = "tiny-vit"
    config.compute_dtype = "float32"  # bfloat16 is slow on CPUs
    config.batch_size = 128
    config.total_steps = 1000
    config.data.train = "demo:train"
    config.data.options.shuffle_buffer = 2048
    config.optim.lr = 2e-3
    config.optim.wd = 0.1
    config.optim.warmup_steps = 100
    config.log_every = 100
    config.checkpoint_every = 500
    config.eval_every = 500
    config.evals = (ml_collections.ConfigDict(dict(
        name="heldout_zeroshot", task="zeroshot", data="demo:heldout", templates=("{}",), batch_size=250,
    )),)
    if arg == "runlocal":  # a few steps, for tests and a first look
        config.total_steps, config.batch_size, config.log_every = 4, 16, 2
        config.checkpoint_every = config.eval_every = 4
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; valid: 'runlocal' or none")
    return config
