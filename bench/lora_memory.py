"""Trainable parameters and optimizer memory of a full fine-tune against LoRA.

    python bench/lora_memory.py [--models ViT-B-16,ViT-L-14,ViT-H-14,ViT-g-14] [--rank 8]
        [--compile ViT-B-16] [--batch 8]

For each model: the parameters a full fine-tune trains and the bytes of its AdamW state
(two float32 moments per trained parameter), against LoRA of rank --rank on the
attention projections (in_proj and out_proj) of both towers, the adapters' state only.
Shapes come from jax.eval_shape of the trainer's own state: nothing is allocated.  For
the --compile models, the train step is also compiled (one CPU device, float32, batch
--batch) and XLA's memory analysis printed: arguments (the state and batch) and
temporaries (activations and gradients) of the compiled step, full against LoRA.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from host_cpu import cpu_model  # noqa: E402

TARGETS = (r"^(visual|text)/transformer/blocks/attn/(in|out)_proj/kernel$",)


def config_for(model: str, rank: int | None, batch: int):
    from clip_jax.train_config import base_config

    config = base_config()
    config.model = model
    config.compute_dtype = "float32"
    config.batch_size = batch
    config.total_steps = 10
    config.mesh = (("data", 1), ("fsdp", 1))
    if rank:
        config.lora.targets, config.lora.rank = TARGETS, rank
    return config


def sizes(setup) -> tuple[int, int, int]:
    """(all parameters, trained parameters, optimizer-state bytes) of a built setup."""
    import jax
    import numpy as np

    from clip_jax import lora

    params = setup.abstract_state.params
    total = sum(int(np.prod(x.shape)) for k, v in params.items() if k != lora.ADAPTERS for x in jax.tree.leaves(v))
    state = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(setup.abstract_state.opt_state))
    trained = lora.count(params[lora.ADAPTERS]) if lora.ADAPTERS in params else total
    return total, trained, state


def compiled_memory(setup, batch: int) -> dict:
    import jax
    import jax.numpy as jnp

    from clip_jax.train_checkpoints import abstract_with_shardings
    from clip_jax.trainer import jit_train_step

    config = setup.model.config
    state = abstract_with_shardings(setup.abstract_state, setup.state_shardings)
    data = {"images": jax.ShapeDtypeStruct((batch, config.vision.image_size, config.vision.image_size, 3), jnp.uint8),
            "tokens": jax.ShapeDtypeStruct((batch, config.text.context_length), jnp.int32)}
    start = time.perf_counter()
    analysis = jit_train_step(setup).lower(state, data).compile().memory_analysis()
    return {"arguments": analysis.argument_size_in_bytes, "temporaries": analysis.temp_size_in_bytes,
            "compile_s": time.perf_counter() - start}


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ViT-B-16,ViT-L-14,ViT-H-14,ViT-g-14")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--compile", default="ViT-B-16", help="models whose train step is compiled ('' for none)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    from clip_jax.trainer import build

    print(f"host: {cpu_model()}; LoRA rank {args.rank} on {TARGETS[0]}")
    print("| model | way | trained parameters | AdamW state | step arguments | step temporaries |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        rows = []
        for rank in (None, args.rank):
            setup = build(config_for(model, rank, args.batch))
            total, trained, state = sizes(setup)
            memory = compiled_memory(setup, args.batch) if model in args.compile.split(",") else None
            rows.append((rank, total, trained, state, memory))
        for rank, total, trained, state, memory in rows:
            way = f"LoRA r={rank}" if rank else "full fine-tune"
            share = f" ({100 * trained / total:.2f}%)" if rank else ""
            step = (f"{gib(memory['arguments'])} | {gib(memory['temporaries'])}" if memory else "- | -")
            print(f"| {model} | {way} | {trained:,}{share} | {gib(state)} | {step} |")
        full, adapted = rows
        print(f"|  | ratio full / LoRA | {full[2] / adapted[2]:.0f}x | {full[3] / adapted[3]:.0f}x | "
              + (f"{full[4]['arguments'] / adapted[4]['arguments']:.2f}x | "
                 f"{full[4]['temporaries'] / adapted[4]['temporaries']:.2f}x |" if full[4] else "- | - |"))


if __name__ == "__main__":
    main()
