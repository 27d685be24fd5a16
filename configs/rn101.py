"""RN101 with the paper's recipe (batch 32,768, peak lr 5e-4, 32 epochs of 400M pairs).

    python train.py --config configs/rn101.py --workdir /ckpt/rn101 \
        --config.data.train='wds:/data/laion/{00000..41407}.tar'

Smoke run on CPU: python train.py --config configs/rn101.py:runlocal --workdir /tmp/rn101
"""
from clip_jax.train_config import paper_config


def get_config(arg=None):
    return paper_config("RN101", lr=5e-4, resnet=True, arg=arg)
