"""ViT-L/14@336px: the paper trains ViT-L/14 at 336 px for one extra epoch (FixRes
style) at peak lr 2e-5, starting from the 224 px ViT-L/14.

    python train.py --config configs/vit_l14_336.py --workdir /ckpt/vit_l14_336 \
        --config.init_from=/ckpt/vit_l14_as_336.safetensors \
        --config.data.train='wds:/data/laion/{00000..41407}.tar'

init_from must hold ViT-L/14@336px-shaped weights (the 224 px model's positional
embedding interpolated to 24x24+1 positions).
Smoke run on CPU: python train.py --config configs/vit_l14_336.py:runlocal --workdir /tmp/l14_336
"""
from clip_jax.train_config import paper_config


def get_config(arg=None):
    config = paper_config("ViT-L/14@336px", lr=2e-5, resnet=False, arg=arg)
    if arg != "runlocal":
        config.epochs = 1.0
    return config
