"""A custom small ViT, named by its dimensions instead of a registered name, trained on the
demo data (CPU-friendly):

    python train.py --config configs/custom_vit.py --workdir /tmp/custom_vit

`config.model` takes a registered name ("ViT-B/32"), a ConfigDict of dimensions (below),
or the path of an open_clip model-config JSON (e.g. open_clip's model_configs/ViT-M-32.json).
Every dimension can be overridden on the command line, e.g.
`--config.model.vision.layers=6 --config.model.act=quick_gelu`; bad ones (a width not
divisible by the heads, an image size not divisible by the patch) fail before anything
compiles.  The architecture is saved in every checkpoint, so `eval.py --checkpoint
/tmp/custom_vit`, `clip_jax.load_checkpoint("/tmp/custom_vit")`,
`python -m clip_jax.convert /tmp/custom_vit out --to open_clip` and the notebooks read
the workdir with nothing registered.
"""
import os

import ml_collections

from clip_jax.train_config import config_file

# The demo's recipe (data, schedule, evaluation, "runlocal"); only the model differs.
demo = config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py"))


def get_config(arg=None):
    config = demo.get_config(arg)
    config.model = ml_collections.ConfigDict(dict(
        embed_dim=64,
        act="gelu",  # or "quick_gelu" (OpenAI's)
        vision=dict(image_size=32, patch_size=4, width=96, layers=3, head_width=32, mlp_ratio=2.0),
        text=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=3),
    ))
    return config
