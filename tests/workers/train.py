"""Runs a tiny training in its own process, for tests that need a fresh JAX runtime
(a given device count, or several processes joined by jax.distributed on CPU).

    python -m tests.workers.train --workdir W --out params.npz --devices 8 [--steps 6]
        [--mesh data=2,fsdp=4] [--num_processes 2 --process_id 0 --port 12345]
"""
import argparse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--mesh", default="data=-1,fsdp=1")
    parser.add_argument("--model", default="tiny-vit")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from tests.helpers.runtime import start_jax

    jax = start_jax(args.devices, args.num_processes, args.process_id, args.port)
    import numpy as np
    from jax.experimental import multihost_utils

    from clip_jax.sharding import path_string
    from clip_jax.trainer import train
    from tests.helpers.training import synthetic_data, tiny_config

    mesh = tuple((name, int(size)) for name, size in (item.split("=") for item in args.mesh.split(",")))
    config = tiny_config(total_steps=args.steps, mesh=mesh, model=args.model, checkpoint_every=1000)
    state = train(config, args.workdir, synthetic_data)
    params = multihost_utils.process_allgather(state.params, tiled=True)
    if jax.process_index() == 0:
        flat = {path_string(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
        np.savez(args.out, **flat)


if __name__ == "__main__":
    main()
