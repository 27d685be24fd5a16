"""ViT-L/14 with the paper's recipe (batch 32,768, peak lr 4e-4, 32 epochs of 400M pairs).

    python train.py --config configs/vit_l14.py --workdir /ckpt/vit_l14 \
        --config.data.train='wds:/data/laion/{00000..41407}.tar'

Smoke run on CPU: python train.py --config configs/vit_l14.py:runlocal --workdir /tmp/vit_l14
"""
from clip_jax.train_config import paper_config


def get_config(arg=None):
    return paper_config("ViT-L/14", lr=4e-4, resnet=False, arg=arg)
