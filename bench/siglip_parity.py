"""SigLIP parity with transformers at full depth (the tests use shallow towers for CI time).

    python bench/siglip_parity.py [--names siglip-base-patch16-224 siglip-so400m-patch14-384]

For each registered name: a seeded random transformers SiglipModel of that config with every
tensor perturbed, its state dict converted in memory through clip_jax's Hugging Face table
(no files), and the max absolute differences of the image embeddings, text embeddings and
logits (float32, CPU) on random images and full-length token rows.  Peak memory is about
three copies of the weights (3.5 GB each for so400m).
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import numpy as np  # noqa: E402
import torchvision  # noqa: F401,E402  (import before anything that loads tensorflow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", nargs="+", default=["siglip-base-patch16-224", "siglip-so400m-patch14-384"])
    args = parser.parse_args()

    import torch
    import transformers
    from test_siglip_parity import hf_outputs, inputs, ours, reference_model

    import clip_jax
    from clip_jax.convert.table import state_dict_to_variables
    from clip_jax.models.families.siglip_naming import pack_qkv

    print(f"{platform.machine()} CPU, {os.cpu_count()} cores; transformers {transformers.__version__}, "
          f"torch {torch.__version__}")
    for name in args.names:
        start = time.time()
        config = clip_jax.get_config(name)
        reference = reference_model(config)
        images, tokens = inputs(config)
        expected = hf_outputs(reference, images, tokens)
        state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
        variables = state_dict_to_variables(pack_qkv(state), config)
        del reference, state
        gc.collect()
        model = clip_jax.create_model(config)
        diffs = [float(np.max(np.abs(a - b))) for a, b in zip(ours(model, variables, images, tokens), expected)]
        print(f"{name} ({config.vision.layers} + {config.text.layers} layers): max |image embedding diff| "
              f"{diffs[0]:.2e}, |text embedding diff| {diffs[1]:.2e}, |logit diff| {diffs[2]:.2e}; "
              f"{time.time() - start:.0f}s")
        del variables, model
        gc.collect()


if __name__ == "__main__":
    main()
