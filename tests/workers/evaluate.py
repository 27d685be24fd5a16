"""Runs the evaluation in its own process, for tests with a fresh JAX runtime: a given
device count, or several processes joined by jax.distributed on CPU (gloo).

    python -m tests.workers.evaluate --checkpoint CKPT --out result.npz --images SPEC --captions SPEC \\
        --devices 4 [--num_processes 2 --process_id 0 --port 12345] [--cache_dir DIR]

Extracts image features (pre-projection) of --images and image + caption features of
--captions with a small batch and caption chunk (padding on every host), runs zero-shot
and a linear probe through run_evals (features cached in --cache_dir, read back on a
second pass), and writes every array and metric from process 0.
"""
import argparse
import json


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--captions", required=True)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cache_dir", default="")
    args = parser.parse_args()
    from tests.helpers.runtime import start_jax

    jax = start_jax(args.devices, args.num_processes, args.process_id, args.port)
    import numpy as np

    import clip_jax

    model, variables = clip_jax.load_checkpoint(args.checkpoint)
    result = evaluate(model, variables, args.images, args.captions, args.cache_dir)
    if jax.process_index() == 0:
        arrays, metrics = result
        np.savez(args.out, metrics=json.dumps(metrics), processes=jax.process_count(), devices=jax.device_count(),
                 **arrays)


def evaluate(model, variables, images: str, captions: str, cache_dir: str = ""):
    """(arrays, metrics) of the evaluation; the test runs the same in-process."""
    import jax

    from clip_jax import data
    from clip_jax.evaluation import features as features_lib
    from clip_jax.evaluation import run_evals

    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    plain = features_lib.extract(model, variables, data.eval_batches(images, batch_size=4, image_size=32, **hosts),
                                 project=False)
    texts = features_lib.extract(model, variables, data.eval_batches(captions, batch_size=3, image_size=32, **hosts),
                                 texts=True, text_chunk=4)
    arrays = {"images": plain.images, "labels": plain.labels, "caption_images": texts.images,
              "texts": texts.texts, "text_mask": texts.text_mask}
    evals = [
        {"name": "zs", "task": "zeroshot", "data": images, "templates": ["a photo of a {}.", "art of the {}."],
         "class_names": ["red", "green", "blue"], "batch_size": 4},
        {"name": "lp", "task": "linear_probe", "data": images, "train_data": images, "batch_size": 4, "lambda": 1.0},
    ]
    if cache_dir:
        for spec in evals:
            spec.update(cache_dir=cache_dir, checkpoint_id="tiny-vit-seed0")
    metrics = run_evals(model, variables, evals)
    if cache_dir:  # again: every feature now comes from the cache
        again = run_evals(model, variables, evals)
        assert again == metrics, (again, metrics)
    return arrays, metrics


if __name__ == "__main__":
    main()
