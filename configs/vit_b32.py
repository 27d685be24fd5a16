"""ViT-B/32 with the paper's recipe (batch 32,768, peak lr 5e-4, 32 epochs of 400M pairs).

    python train.py --config configs/vit_b32.py --workdir /ckpt/vit_b32 \
        --config.data.train='wds:/data/laion/{00000..41407}.tar'

Smoke run on CPU: python train.py --config configs/vit_b32.py:runlocal --workdir /tmp/vit_b32
"""
from clip_jax.train_config import paper_config


def get_config(arg=None):
    return paper_config("ViT-B/32", lr=5e-4, resnet=False, arg=arg)
