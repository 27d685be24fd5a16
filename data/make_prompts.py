"""One-off tool that writes prompts.json (class names and templates) from installed packages.

    python data/make_prompts.py   # needs open_clip_torch and clip-benchmark

The lists are facts published by OpenAI (the ImageNet prompt-engineering notebook and
data/prompts.md); we read them from the copies that ship as data in open_clip
(zero_shot_metadata: ImageNet) and CLIP_benchmark (en_classnames.json and
en_zeroshot_classification_templates.json: the other datasets) so that they match
those tools byte for byte.  Only the lists go into the JSON, no code.
"""
import importlib.util
import json
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clip_jax", "evaluation", "data")


def _clip_benchmark_json(name):
    spec = importlib.util.find_spec("clip_benchmark")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", name)
    with open(path) as f:
        return json.load(f)


def main():
    from open_clip import zero_shot_metadata as meta

    out = {
        "imagenet1k": {
            "class_names": list(meta.IMAGENET_CLASSNAMES),
            "templates": [t("{}") for t in meta.OPENAI_IMAGENET_TEMPLATES],
            "source": "OpenAI Prompt_Engineering_for_ImageNet notebook (via open_clip zero_shot_metadata)",
        },
        "imagenet1k_simple": {
            "class_names": list(meta.IMAGENET_CLASSNAMES),
            "templates": [t("{}") for t in meta.SIMPLE_IMAGENET_TEMPLATES],
            "source": "the notebook's 7-template subset (via open_clip zero_shot_metadata)",
        },
    }
    names = _clip_benchmark_json("en_classnames.json")
    templates = _clip_benchmark_json("en_zeroshot_classification_templates.json")
    for key in sorted(set(names) | set(templates)):
        if key in ("imagenet1k", "dummy"):
            continue
        entry = {"source": "CLIP_benchmark 1.6.2 en_*.json (after OpenAI data/prompts.md; some lists differ, see prompts.py)"}
        if key in names:
            entry["class_names"] = names[key]
        if key in templates:
            entry["templates"] = [t.replace("{c}", "{}") for t in templates[key]]
        out[key] = entry
    with open(os.path.join(HERE, "prompts.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
