"""Evaluate a CLIP checkpoint.

    python eval.py --checkpoint PATH --task zeroshot --data SPEC [--templates T.txt|"a photo of a {}."]
                   [--class_names NAMES.txt] [--output results.json]

PATH: anything clip_jax.load_checkpoint reads (OpenAI .pt, open_clip file, Hugging Face
folder, clip_jax file) or a training workdir (its newest checkpoint).  SPEC: a dataset
spec string as in training, e.g. demo:heldout, folder:/data/val, tfds:cifar10:test.
Zero-shot classification for now; retrieval and linear probes follow.
"""
import json
import os

from absl import app, flags

flags.DEFINE_string("checkpoint", None, "checkpoint file, HF folder or training workdir", required=True)
flags.DEFINE_enum("task", "zeroshot", ["zeroshot"], "what to evaluate")
flags.DEFINE_string("data", None, "dataset spec string", required=True)
flags.DEFINE_string("templates", "a photo of a {}.", "a template with {} or a file with one per line")
flags.DEFINE_string("class_names", "", "file with one class name per line (default: the dataset's)")
flags.DEFINE_string("name", None, "architecture name when it cannot be inferred")
flags.DEFINE_integer("batch_size", 256, "images per batch")
flags.DEFINE_string("output", "", "write results as JSON here")
FLAGS = flags.FLAGS


def _lines_or_value(value: str) -> list[str]:
    if os.path.isfile(value):
        with open(value) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    return [value]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import clip_jax
    from clip_jax.evaluation.runner import run_evals

    model, variables = clip_jax.load_checkpoint(FLAGS.checkpoint, FLAGS.name)
    spec = {
        "name": FLAGS.task,
        "task": FLAGS.task,
        "data": FLAGS.data,
        "templates": _lines_or_value(FLAGS.templates),
        "class_names": _lines_or_value(FLAGS.class_names) if FLAGS.class_names else None,
        "batch_size": FLAGS.batch_size,
    }
    results = run_evals(model, variables, [spec])
    print(f"{FLAGS.checkpoint} on {FLAGS.data} ({FLAGS.task}, {len(spec['templates'])} templates)")
    for key, value in results.items():
        print(f"  {key.split('/')[-1]:<24}{value:10.2f}")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"checkpoint": FLAGS.checkpoint, "data": FLAGS.data, "task": FLAGS.task,
                       "metrics": {k.split("/")[-1]: v for k, v in results.items()}}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
