"""RN50x16 with the paper's recipe (batch 32,768, peak lr 4e-4, 32 epochs of 400M pairs).

    python train.py --config configs/rn50x16.py --workdir /ckpt/rn50x16 \
        --config.data.train='wds:/data/laion/{00000..41407}.tar'

Smoke run on CPU: python train.py --config configs/rn50x16.py:runlocal --workdir /tmp/rn50x16
"""
from clip_jax.train_config import paper_config


def get_config(arg=None):
    return paper_config("RN50x16", lr=4e-4, resnet=True, arg=arg)
