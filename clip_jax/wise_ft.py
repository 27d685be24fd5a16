"""WiSE-FT (Wortsman et al. 2022): ensemble a zero-shot model and its fine-tuned copy in
weight space, θ(α) = (1 - α)·θ_zeroshot + α·θ_finetuned, and score every α on the
in-distribution test set and on distribution-shift sets.

    python -m clip_jax.wise_ft --zeroshot A --finetuned B --alphas 0:1:0.1 \\
        --data ID_SPEC [--shift SPEC --shift SPEC ...] [--templates KEY] [--class_names KEY] \\
        [--output results.json] [--plot curve.png] [--save_alpha 0.5 --save mixed.safetensors]

A and B: any checkpoint spec clip_jax.load_checkpoint reads (a file or folder,
hf-hub:ORG/NAME, a pretrained NAME:TAG), of one architecture.  Every parameter is mixed
(the towers, projections and temperature); α = 0 gives A's parameters and α = 1 B's,
bit for bit.  Each α is scored zero-shot, with the prompt-ensemble classifier built from
its own text tower; when B is a classification fine-tune (configs/finetune.py's `ce`) it
has a head, and A gets the zero-shot head that fine-tune started from (the prompt
ensemble of --class_names and --templates, times A's logit scale), so heads are mixed
too, as in the paper, and each α is scored with its mixed head.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Mapping, Sequence

import jax
import numpy as np


def interpolate(zeroshot: Mapping, finetuned: Mapping, alpha: float) -> dict:
    """(1 - α)·zeroshot + α·finetuned, leaf by leaf, in float64 and cast back to each
    leaf's dtype (exact at α = 0 and α = 1)."""
    check_alpha(alpha)
    zs_leaves, zs_tree = jax.tree_util.tree_flatten_with_path(zeroshot)
    ft_leaves, ft_tree = jax.tree_util.tree_flatten_with_path(finetuned)
    if zs_tree != ft_tree:
        zs_paths = {jax.tree_util.keystr(p) for p, _ in zs_leaves}
        ft_paths = {jax.tree_util.keystr(p) for p, _ in ft_leaves}
        raise ValueError("the two checkpoints hold different parameters: only in the zero-shot one: "
                         f"{sorted(zs_paths - ft_paths)[:8]}; only in the fine-tuned one: "
                         f"{sorted(ft_paths - zs_paths)[:8]}")
    mixed = []
    for (path, a), (_, b) in zip(zs_leaves, ft_leaves):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise ValueError(f"parameter {jax.tree_util.keystr(path)} has shape {a.shape} in the zero-shot checkpoint "
                             f"and {b.shape} in the fine-tuned one")
        mixed.append(((1.0 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)).astype(a.dtype))
    return jax.tree_util.tree_unflatten(zs_tree, mixed)


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]: 0 is the zero-shot model, 1 the fine-tuned one")


def parse_alphas(text: str) -> list[float]:
    """"0:1:0.1" (start:stop:step, stop included) or "0,0.5,1"."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            alphas = [round(start + i * step, 10) for i in range(count)]
        else:
            alphas = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--alphas {text!r}: write START:STOP:STEP (e.g. 0:1:0.1, a positive step) or a comma "
                         "list (e.g. 0,0.5,1)") from None
    for alpha in alphas:
        check_alpha(alpha)
    return alphas


def load_pair(zeroshot: str, finetuned: str, name: str | None = None):
    """(model, zero-shot variables, fine-tuned variables); an error when the two are not
    one architecture."""
    import clip_jax

    model, zs = clip_jax.load_checkpoint(zeroshot, name)
    other, ft = clip_jax.load_checkpoint(finetuned, name)
    if other.config != model.config:
        raise ValueError(f"{zeroshot} and {finetuned} are different architectures ({model.config} and "
                         f"{other.config}); WiSE-FT mixes a model with its own fine-tuned copy")
    return model, zs, ft


def with_zeroshot_head(model, zeroshot: Mapping, finetuned: Mapping, data: str | None, class_names, templates,
                       tokenizer=None) -> dict:
    """`zeroshot` with the zero-shot head a classification fine-tune started from, when
    `finetuned` has a head (clip_jax.classifier); else unchanged."""
    from clip_jax import classifier

    if classifier.HEAD not in finetuned:
        if classifier.HEAD in zeroshot:
            raise ValueError("the zero-shot checkpoint has a classification head and the fine-tuned one none; "
                             "give them in the order --zeroshot A --finetuned B")
        return dict(zeroshot)
    if classifier.HEAD in zeroshot:
        return dict(zeroshot)
    from clip_jax.evaluation.prompts import resolve_class_names, resolve_templates
    from clip_jax.evaluation.tasks import zeroshot_classes
    from clip_jax.evaluation.zeroshot import default_templates

    if not data and not class_names:
        raise ValueError("the fine-tuned checkpoint has a classification head: give --class_names (or --data with "
                         "the classes' own names) and --templates as in fine-tuning, to build the zero-shot head")
    names = (zeroshot_classes({"name": "wise_ft", "data": data, "class_names": class_names})[0] if data
             else resolve_class_names(class_names))
    head = classifier.zeroshot_head(model, zeroshot, names,
                                    resolve_templates(templates) if templates else default_templates(model.config),
                                    tokenizer=tokenizer)
    classifier.check_head(finetuned[classifier.HEAD], len(names), "wise_ft")
    return {**zeroshot, classifier.HEAD: jax.tree.map(np.asarray, head)}


def evaluations(data: str, shifts: Sequence[str], templates, class_names, batch_size: int) -> list[dict]:
    specs = []
    for label, spec in [("id", data)] + [(f"shift{i}", s) for i, s in enumerate(shifts)]:
        specs.append({"name": label, "task": "zeroshot", "data": spec, "templates": templates,
                      "class_names": class_names, "batch_size": batch_size})
    return specs


def sweep(model, zeroshot: Mapping, finetuned: Mapping, alphas: Sequence[float], evals: list[dict],
          tokenizer=None) -> list[dict]:
    """[{alpha, id, shifts: [...], shift_mean}] of top-1 accuracy at every α."""
    from clip_jax.evaluation import runner

    runner.validate(evals)
    rows = []
    for alpha in alphas:
        results = runner.run_evals(model, interpolate(zeroshot, finetuned, alpha), evals, tokenizer=tokenizer)
        shifts = [results[f"eval/{spec['name']}/top1"] for spec in evals[1:]]
        rows.append({"alpha": alpha, "id": results["eval/id/top1"], "shifts": shifts,
                     "shift_mean": float(np.mean(shifts)) if shifts else None})
    return rows


def table(rows: list[dict], data: str, shifts: Sequence[str]) -> str:
    head = ["alpha", f"ID {data}"] + [f"shift {s}" for s in shifts] + (["shift mean"] if shifts else [])
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for row in rows:
        cells = [f"{row['alpha']:.2f}", f"{row['id']:.4f}"] + [f"{v:.4f}" for v in row["shifts"]]
        if shifts:
            cells.append(f"{row['shift_mean']:.4f}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> str | None:
    """ID against mean shifted accuracy, one point per α (matplotlib, when installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot written"
    if rows[0]["shift_mean"] is None:
        return "no --shift sets: no plot of ID against shifted accuracy"
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot([r["id"] for r in rows], [r["shift_mean"] for r in rows], "o-")
    for r in rows:
        axis.annotate(f"{r['alpha']:g}", (r["id"], r["shift_mean"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.set_xlabel("in-distribution top-1")
    axis.set_ylabel("mean top-1 under distribution shift")
    axis.set_title("WiSE-FT: label = alpha")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_jax.wise_ft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zeroshot", required=True, help="the model before fine-tuning (any checkpoint spec)")
    parser.add_argument("--finetuned", required=True, help="its fine-tuned copy (the same architecture)")
    parser.add_argument("--alphas", default="0:1:0.1", help="START:STOP:STEP or a comma list, each in [0, 1]")
    parser.add_argument("--data", help="the in-distribution test set (a dataset spec)")
    parser.add_argument("--shift", action="append", default=[], help="a distribution-shift test set (repeatable)")
    parser.add_argument("--templates", default=None, help="as eval.py's (default: the model family's)")
    parser.add_argument("--class_names", default=None, help="as eval.py's (default: the dataset's)")
    parser.add_argument("--tokenizer", default=None, help="a SigLIP model's SentencePiece file or folder")
    parser.add_argument("--name", default=None, help="architecture name, when the checkpoints do not say")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--output", default="", help="write the sweep as JSON here")
    parser.add_argument("--plot", default="", help="write ID against shifted accuracy here (PNG)")
    parser.add_argument("--save_alpha", type=float, default=None, help="write the checkpoint of this alpha ...")
    parser.add_argument("--save", default="", help="... here (clip_jax's .safetensors format)")
    args = parser.parse_args(argv)
    try:
        alphas = parse_alphas(args.alphas)
        if (args.save_alpha is None) != (not args.save):
            raise ValueError("--save_alpha and --save go together: the alpha to write and where")
        if args.save_alpha is not None:
            check_alpha(args.save_alpha)
        if not args.data and args.save_alpha is None:
            raise ValueError("give --data (and --shift sets) to score the alphas, or --save_alpha/--save to write one")
        evals = evaluations(args.data, args.shift, args.templates, args.class_names, args.batch_size) \
            if args.data else []
        if evals:
            from clip_jax.evaluation import runner

            runner.validate(evals)  # bad specs fail before a checkpoint is read
        model, zs, ft = load_pair(args.zeroshot, args.finetuned, args.name)
        import clip_jax

        tokenizer = clip_jax.tokenizers.for_checkpoint(model, args.zeroshot, args.tokenizer)
        zs = with_zeroshot_head(model, zs, ft, args.data, args.class_names, args.templates, tokenizer)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if evals:
        rows = sweep(model, zs, ft, alphas, evals, tokenizer)
        print(table(rows, args.data, args.shift))
        if args.output:
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            with open(args.output, "w") as f:
                json.dump({"zeroshot": args.zeroshot, "finetuned": args.finetuned, "data": args.data,
                           "shifts": args.shift, "sweep": rows}, f, indent=2)
        if args.plot:
            problem = plot(rows, args.plot)
            print(problem or f"plot: {args.plot}", file=sys.stderr)
    if args.save_alpha is not None:
        written = clip_jax.export_checkpoint(model, interpolate(zs, ft, args.save_alpha), args.save, "clip_jax")
        print(f"alpha {args.save_alpha:g} -> {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
