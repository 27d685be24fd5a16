"""Examples of the options beyond the paper's recipe, one per argument, on ViT-B/16:

    python train.py --config configs/beyond.py:ring  --workdir DIR   # ring softmax loss
    python train.py --config configs/beyond.py:siglip --workdir DIR  # sigmoid loss (SigLIP)
    python train.py --config configs/beyond.py:accum --workdir DIR   # 32k batch, 128 micro-batches
    python train.py --config configs/beyond.py:flip  --workdir DIR   # patch dropout (FLIP)
    python train.py --config configs/beyond.py:lit   --workdir DIR   # locked image tower (LiT)

Append ",runlocal" (e.g. `beyond.py:siglip,runlocal`) for a 3-step CPU smoke run on demo data
with the tiny model.  Data: set --config.data.train.
"""
from clip_jax.train_config import paper_config

VARIANTS = ("ring", "siglip", "accum", "flip", "lit")


def get_config(arg="ring"):
    variant, _, local = (arg or "ring").partition(",")
    if variant not in VARIANTS or local not in ("", "runlocal"):
        raise ValueError(f"unknown argument {arg!r}; valid: one of {VARIANTS}, optionally followed by ',runlocal'")
    config = paper_config("ViT-B/16", lr=5e-4, resnet=False, arg=local or None)
    if variant == "ring":
        # Embeddings travel the device ring: loss memory local x local, not local x global.
        config.loss = "softmax_ring"
    elif variant == "siglip":
        # Pairwise sigmoid loss on the ring; temperature starts at 10, bias at -10.
        config.loss = "sigmoid"
    elif variant == "accum":
        # The whole 32k batch's negatives in the activation memory of a 256 micro-batch.
        config.accumulation_steps = 128 if not local else 2
        config.remat = True
    elif variant == "flip":
        # Drop half the patches (half the image tower's tokens), then tune unmasked.
        config.patch_dropout = 0.5
        config.patch_dropout_unmasked_steps = 1000 if not local else 1
    elif variant == "lit":
        # Lock the pretrained image tower (no optimizer state), train the text tower.
        config.init_from = "/ckpt/ViT-B-16.pt"  # any file clip_jax.load_checkpoint reads
        config.optim.frozen = (r"^visual/",)
    if local:
        config.model = "tiny-vit"
        config.init_from = ""
        if variant == "accum":
            config.batch_size = 16
    return config
