"""One-off tool that writes the evaluation's package data: prompts.json (class names and
templates) and class_subsets.json (the 200-class subsets of ImageNet-A and ImageNet-R).

    python data/make_prompts.py --openai_prompts CLIP/data/prompts.md \\
        --imagenet_a natural-adv-examples/eval.py --imagenet_r imagenet-r/eval.py
    # also needs open_clip_torch and clip-benchmark installed

The lists are facts; only they go into the JSON, no code.  Where each comes from:
  - ImageNet: OpenAI's Prompt_Engineering_for_ImageNet notebook (1,000 edited names, 80
    templates, the 7-template subset), read from open_clip's zero_shot_metadata copy.
  - The paper's other 26 datasets: OpenAI's data/prompts.md (openai/CLIP), the lists the
    paper's zero-shot numbers used.  Class order is OpenAI's (the label order of their
    copies of the datasets), which is not always TFDS's or torchvision's.  FER2013 has
    several names for some classes (a list per class).
  - Datasets outside the paper (svhn, dmlab, diabetic_retinopathy, the VTAB tasks): CLIP_benchmark 1.6.2's
    en_classnames.json / en_zeroshot_classification_templates.json.  Where CLIP_benchmark's
    list for a paper dataset differs from prompts.md (class order, names or templates), its
    version is kept too, as "<key>_clip_benchmark", for data laid out as CLIP_benchmark's.
  - ImageNet-A / ImageNet-R: the 200 ImageNet-1k indices (and wnids) of each, from the
    datasets' own evaluation scripts (hendrycks/natural-adv-examples `thousand_k_to_200`,
    hendrycks/imagenet-r `all_wnids` and `imagenet_r_wnids`), checked against
    CLIP_benchmark's wnid lists.

Inputs are pinned by sha256 (the commits below); a changed file stops the script.
The upstream files are read as text and only their list literals are evaluated
(ast.literal_eval): nothing from them is executed.
"""
import argparse
import ast
import hashlib
import importlib.util
import json
import os
import re

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clip_jax", "evaluation", "data")

OPENAI_PROMPTS = ("openai/CLIP", "d05afc436d78f1c48dc0dbf8e5980a9d471f35f6", "data/prompts.md",
                  "f98d2d25e78cc1fee650240b519f7cb58a83cfcc5aa538cde52514809cf4a1c9")
IMAGENET_A = ("hendrycks/natural-adv-examples", "07770705658c3a1c8acce31fd9dbd68f06e297c3", "eval.py",
              "3cf6003d10e7182806eacf88c704d88ee349bab124b14225e001ce841996722f")
IMAGENET_R = ("hendrycks/imagenet-r", "3131cacee97c407bd2ecea15846a67817a64f924", "eval.py",
              "7ef4a3c00a24e8677233bd25a38ed290f912f8ba5f7b924cd1524692f4151ee6")

# prompts.md section title -> our key (CLIP_benchmark's key where it has the dataset)
OPENAI_KEYS = {
    "Birdsnap": "birdsnap", "CIFAR10": "cifar10", "CIFAR100": "cifar100", "CLEVRCounts": "clevr_count_all",
    "Caltech101": "caltech101", "Country211": "country211", "DescribableTextures": "dtd", "EuroSAT": "eurosat",
    "FGVCAircraft": "fgvc_aircraft", "FacialEmotionRecognition2013": "fer2013", "Flowers102": "flowers",
    "Food101": "food101", "GTSRB": "gtsrb", "HatefulMemes": "hateful_memes",
    "KITTI": "kitti_closest_vehicle_distance", "Kinetics700": "kinetics700", "MNIST": "mnist",
    "OxfordPets": "pets", "PascalVOC2007": "voc2007", "PatchCamelyon": "pcam", "RESISC45": "resisc45",
    "SST2": "renderedsst2", "STL10": "stl10", "SUN397": "sun397", "StanfordCars": "cars", "UCF101": "ucf101",
}


def _read_pinned(path, pin):
    repo, commit, name, sha = pin
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha:
        raise SystemExit(f"{path}: sha256 {digest}, expected {sha} ({repo}@{commit[:7]}:{name})")
    return data.decode("utf-8")


def _literal(text, name):
    """The literal assigned to `name` at the top level of Python source `text`: the text is
    parsed, never run, and only that literal is evaluated."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"no `{name} = ...` literal found")


def openai_prompts(path):
    """{section title: (classes, templates)} of prompts.md."""
    text = _read_pinned(path, OPENAI_PROMPTS)
    out = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
        out[title.strip()] = (_literal(block, "classes"), _literal(block, "templates"))
    if set(out) != set(OPENAI_KEYS):
        raise SystemExit(f"prompts.md sections changed: {sorted(set(out) ^ set(OPENAI_KEYS))}")
    return out


def _clip_benchmark_json(name):
    spec = importlib.util.find_spec("clip_benchmark")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", name)
    with open(path) as f:
        return json.load(f)


def _clip_benchmark_wnids(name):
    """A wnid list literal of CLIP_benchmark's builder.py (a cross-check only)."""
    spec = importlib.util.find_spec("clip_benchmark")
    with open(os.path.join(os.path.dirname(spec.origin), "datasets", "builder.py")) as f:
        text = f.read()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"CLIP_benchmark's builder.py has no {name}")


def class_subsets(imagenet_a_path, imagenet_r_path):
    a_text = _read_pinned(imagenet_a_path, IMAGENET_A)
    r_text = _read_pinned(imagenet_r_path, IMAGENET_R)
    all_wnids = _literal(r_text, "all_wnids")
    if len(all_wnids) != 1000 or all_wnids != sorted(all_wnids):
        raise SystemExit("imagenet-r all_wnids is not the 1,000 sorted ImageNet wnids")
    to_200 = _literal(a_text, "thousand_k_to_200")
    a_indices = [k for k in sorted(to_200) if to_200[k] != -1]
    if [to_200[k] for k in a_indices] != list(range(200)):
        raise SystemExit("thousand_k_to_200 does not map onto 0..199 in order")
    r_set = _literal(r_text, "imagenet_r_wnids")
    r_indices = [i for i, wnid in enumerate(all_wnids) if wnid in r_set]
    subsets = {
        "imagenet_a": {"indices": a_indices, "wnids": [all_wnids[i] for i in a_indices],
                       "source": f"{IMAGENET_A[0]}@{IMAGENET_A[1][:7]} {IMAGENET_A[2]} thousand_k_to_200"},
        "imagenet_r": {"indices": r_indices, "wnids": [all_wnids[i] for i in r_indices],
                       "source": f"{IMAGENET_R[0]}@{IMAGENET_R[1][:7]} {IMAGENET_R[2]} imagenet_r_wnids"},
    }
    for key, name in (("imagenet_a", "imagenet_a_wnids"), ("imagenet_r", "imagenet_r_wnids")):
        if sorted(_clip_benchmark_wnids(name)) != subsets[key]["wnids"] or len(subsets[key]["wnids"]) != 200:
            raise SystemExit(f"{key}: the wnids disagree with CLIP_benchmark's {name}")
    return subsets


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openai_prompts", required=True, help="openai/CLIP data/prompts.md")
    parser.add_argument("--imagenet_a", required=True, help="hendrycks/natural-adv-examples eval.py")
    parser.add_argument("--imagenet_r", required=True, help="hendrycks/imagenet-r eval.py")
    args = parser.parse_args()
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
    cb_names = _clip_benchmark_json("en_classnames.json")
    cb_templates = _clip_benchmark_json("en_zeroshot_classification_templates.json")
    clip_benchmark = {}
    for key in sorted(set(cb_names) | set(cb_templates)):
        if key in ("imagenet1k", "dummy"):
            continue
        entry = {}
        if key in cb_names:
            entry["class_names"] = cb_names[key]
        if key in cb_templates:
            entry["templates"] = [t.replace("{c}", "{}") for t in cb_templates[key]]
        clip_benchmark[key] = entry

    openai_source = f"OpenAI {OPENAI_PROMPTS[0]}@{OPENAI_PROMPTS[1][:7]} {OPENAI_PROMPTS[2]}"
    for title, (classes, templates) in openai_prompts(args.openai_prompts).items():
        key = OPENAI_KEYS[title]
        entry = {"class_names": classes, "templates": templates, "source": f"{openai_source}, section {title}"}
        theirs = clip_benchmark.pop(key, None)
        if theirs is not None:
            mine = {"class_names": classes, "templates": templates}
            fields = ("class_names", "templates")
            differ = [field for field in fields if field in theirs and theirs[field] != mine[field]]
            absent = [field for field in fields if field not in theirs]
            if differ:
                entry["source"] += f"; CLIP_benchmark 1.6.2's {' and '.join(differ)} differ: {key}_clip_benchmark"
                note = (
                    "its class order and names follow CLIP_benchmark's dataset loaders"
                    if "class_names" in differ
                    else "other templates, " + ("same class names" if "class_names" in theirs else "no class names")
                )
                out[f"{key}_clip_benchmark"] = {
                    **theirs,
                    "source": f"CLIP_benchmark 1.6.2 en_*.json; differs from OpenAI's prompts.md ({note})",
                }
            else:
                entry["source"] += (
                    "; CLIP_benchmark 1.6.2 has the same lists"
                    if not absent
                    else f"; CLIP_benchmark 1.6.2 has the same {' and '.join(mine.keys() - set(absent))}"
                    f" and no {' or '.join(absent)}"
                )
        out[key] = entry
    for key, entry in clip_benchmark.items():
        out[key] = {**entry, "source": "CLIP_benchmark 1.6.2 en_*.json (not a dataset of prompts.md)"}
    out = {key: out[key] for key in sorted(out, key=lambda k: (not k.startswith("imagenet1k"), k))}
    for key, entry in out.items():
        for template in entry.get("templates", []):
            if "{}" not in template:
                raise SystemExit(f"{key}: template without {{}}: {template!r}")
    with open(os.path.join(HERE, "prompts.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(HERE, "class_subsets.json"), "w") as f:
        subsets = class_subsets(args.imagenet_a, args.imagenet_r)  # one line per list
        f.write(
            "{\n"
            + ",\n".join(
                f" {json.dumps(key)}: {{\n"
                + ",\n".join(f"  {json.dumps(field)}: {json.dumps(value)}" for field, value in entry.items())
                + "\n }"
                for key, entry in subsets.items()
            )
            + "\n}\n"
        )


if __name__ == "__main__":
    main()
