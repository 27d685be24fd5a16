"""Evaluate a CLIP or SigLIP checkpoint: zero-shot classification, retrieval, a linear probe or few-shot Tip-Adapter.

    python eval.py --checkpoint PATH --task zeroshot --data tfds:cifar10:test --templates cifar10
    python eval.py --checkpoint PATH --task zeroshot --data folder:/data/val \\
                   --templates imagenet --class_names imagenet
    python eval.py --checkpoint PATH --task retrieval --data wds:/data/coco-test-{000..004}.tar
    python eval.py --checkpoint PATH --task linear_probe --train_data tfds:cifar10:train \\
                   --data tfds:cifar10:test [--val_data SPEC] [--kshot 16] [--features pre|post]
    python eval.py --checkpoint PATH --task tip_adapter --train_data SPEC --data SPEC [--val_data SPEC] \\
                   [--kshot 16] [--templates KEY] [--class_names KEY]
    python eval.py --checkpoint PATH --task robustness --data ID_SPEC --shift SPEC [--shift SPEC ...] \\
                   [--baseline ZERO_SHOT_CHECKPOINT] [--templates KEY] [--class_names KEY]
    python eval.py --checkpoint PATH --suite zeroshot_paper|imagenet_robustness|retrieval \\
                   [--tfds_data_dir DIR]

PATH: anything clip_jax.load_checkpoint reads (OpenAI .pt, open_clip file, Hugging Face
CLIP or SigLIP folder, big_vision SigLIP .npz, clip_jax file), a training workdir (its
newest checkpoint), hf-hub:ORG/NAME, or a pretrained NAME:TAG (ViT-B-32:laion2b_s34b_b79k;
docs/pretrained.md), downloaded once into the cache.  SigLIP models need their SentencePiece tokenizer: a Hugging Face
folder's own is used, else pass --tokenizer FILE_OR_FOLDER.  SPEC: a dataset
spec string as in training (demo:heldout, folder:/data/val, csv:..., wds:..., tfds:...).
--templates and --class_names take a shipped key (imagenet, imagenet_simple, and OpenAI's
lists of the paper's datasets: cifar10, food101, ...; see clip_jax/evaluation/prompts.py),
a file (one per line or a JSON list) or, for templates, one inline template with '{}'.
--class_subset imagenet_a|imagenet_r scores the 200 classes of ImageNet-A/-R
(with --class_names imagenet; labels may index all 1,000 classes or the 200).  A suite skips (and reports) the
datasets that are not prepared in TFDS's data dir.

Writes {"checkpoint", "data", "task", "metrics"} as JSON (with --suite: "evaluations",
one such record per dataset, and "skipped") and prints a table.

Several hosts: the same command on each, with --coordinator_address HOST0:PORT
--num_processes N --process_id I (or nothing on a TPU pod / under SLURM); each host reads
and encodes its share of the data, and process 0 prints and writes the results.
"""
import json
import os

try:  # torchvision before tensorflow in one process, or it segfaults (tests/conftest.py)
    import torchvision  # noqa: F401
except ImportError:
    pass

from absl import app, flags

from clip_jax.evaluation.suites import SUITES
from clip_jax.evaluation.tasks import TASKS
from clip_jax.multihost_flags import join_from_flags

flags.DEFINE_string("checkpoint", None, "checkpoint file, HF folder, training workdir, hf-hub:ORG/NAME or "
                    "pretrained NAME:TAG", required=True)
flags.DEFINE_enum("task", "zeroshot", list(TASKS), "what to evaluate")
flags.DEFINE_string("data", None, "dataset spec string (the test split)")
flags.DEFINE_string("train_data", None, "linear probe: training split spec")
flags.DEFINE_string("val_data", None, "linear probe: validation split spec (default: 20% of train)")
flags.DEFINE_string("templates", "", "shipped key, file, or one template with {} (default: the model's, "
                    "CLIP 'a photo of a {}.', SigLIP 'This is a photo of {}.')")
flags.DEFINE_string("tokenizer", "", "a SigLIP model's SentencePiece file or folder (default: the checkpoint's "
                    "folder); CLIP models use CLIP's BPE")
flags.DEFINE_string("class_names", "", "shipped key or file (default: the dataset's own names)")
flags.DEFINE_string("class_subset", "", "score only these classes: imagenet_a, imagenet_r or a file of indices")
flags.DEFINE_bool("check_class_count", True, "the class names must match the dataset's class count")
flags.DEFINE_enum("suite", None, list(SUITES), "run a suite")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir for --suite (default: TFDS's)")
flags.DEFINE_integer("kshot", 0, "linear probe / tip_adapter: k training examples per class (0: all; tip_adapter 16)")
flags.DEFINE_enum("features", "pre", ["pre", "post"], "linear probe: pre- or post-projection features")
flags.DEFINE_bool("normalize", False, "linear probe: L2-normalise features first (CLIP_benchmark does)")
flags.DEFINE_integer("seed", 0, "linear probe / tip_adapter: seed of the k-shot draw (and the probe's val split)")
flags.DEFINE_integer("image_size", 0, "image size; must match the checkpoint (0: the checkpoint's)")
flags.DEFINE_string("cache_dir", "", "cache features here, keyed by checkpoint and dataset")
flags.DEFINE_string("name", None, "architecture name when it cannot be inferred")
flags.DEFINE_integer("batch_size", 256, "images per batch (per host)")
flags.DEFINE_string("output", "", "write results as JSON here")
flags.DEFINE_multi_string("shift", [], "robustness: a distribution-shifted set of the same classes (repeat the flag)")
flags.DEFINE_string("baseline", "", "robustness: the zero-shot checkpoint, for effective robustness against it")
FLAGS = flags.FLAGS


def _evaluations() -> tuple[list[dict], dict]:
    from clip_jax.evaluation.suites import suite_evals

    if FLAGS.suite:
        return suite_evals(FLAGS.suite, data_dir=FLAGS.tfds_data_dir, batch_size=FLAGS.batch_size)
    if not FLAGS.data:
        raise app.UsageError("--data (a dataset spec) or --suite is required")
    spec = {"name": FLAGS.task, "task": FLAGS.task, "data": FLAGS.data, "batch_size": FLAGS.batch_size}
    # The task's own options, from the flags of the same names ("" is unset).
    spec.update({key: None if FLAGS[key].value in ("", []) else FLAGS[key].value for key in TASKS[FLAGS.task].flags})
    return [spec], {}


def _table(title: str, metrics: dict) -> str:
    lines = [title]
    for key, value in metrics.items():
        lines.append(f"  {key:<28}{value:12.4g}" if isinstance(value, float) and abs(value) < 1e-2
                     else f"  {key:<28}{value:12.2f}" if isinstance(value, float) else f"  {key:<28}{value:>12}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    join_from_flags()  # several hosts: each extracts its share of the features
    import jax

    import clip_jax
    from clip_jax.evaluation import features, runner

    evals, skipped = _evaluations()
    try:
        runner.validate(evals)  # config errors before the checkpoint is even read
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    model, variables = clip_jax.load_checkpoint(FLAGS.checkpoint, FLAGS.name)
    # A hub or pretrained name is fingerprinted by the cached files it names.
    checkpoint_id = (features.checkpoint_fingerprint(clip_jax.pretrained.locate(FLAGS.checkpoint).path)
                     if FLAGS.cache_dir else None)
    for spec in evals:
        spec.update(image_size=FLAGS.image_size or None, cache_dir=FLAGS.cache_dir or None, checkpoint_id=checkpoint_id)
    tokenizer = clip_jax.tokenizers.for_checkpoint(model, FLAGS.checkpoint, FLAGS.tokenizer or None)
    results = runner.run_evals(model, variables, evals, tokenizer=tokenizer)
    if jax.process_index() != 0:  # every host has the results; one reports them
        return
    records = []
    for spec in evals:
        prefix = f"eval/{spec['name']}/"
        metrics = {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
        records.append({"checkpoint": FLAGS.checkpoint, "data": spec["data"], "task": spec["task"], "metrics": metrics})
        print(_table(f"{FLAGS.checkpoint} on {spec['data']} ({spec['task']})", metrics))
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    if FLAGS.output:
        out = {"suite": FLAGS.suite, "evaluations": records, "skipped": skipped} if FLAGS.suite else records[0]
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    app.run(main)
