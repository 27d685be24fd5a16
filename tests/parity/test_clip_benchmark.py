"""Parity with CLIP_benchmark 1.6.2 (test-only oracle).

End to end: one small open_clip model (a custom tiny config with seeded random weights,
perturbed) is saved and read by clip_jax.load_checkpoint; CLIP_benchmark's zero-shot and
retrieval `evaluate` run the torch model on the very images our pipeline decoded
(eval_batches output), ours run through run_evals.  A random model is near chance, so a
second set of checks feeds both sides Gaussian-cluster features with real signal through a
stand-in model.  Tolerances (the issue): 0.5 points zero-shot and retrieval, 1 point for
the linear probe.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
cb_zeroshot = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
cb_retrieval = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
cb_linear = pytest.importorskip("clip_benchmark.metrics.linear_probe")

import clip_jax  # noqa: E402
from clip_jax import data  # noqa: E402
from clip_jax.evaluation import classification_metrics, retrieval_metrics, run_evals  # noqa: E402
from clip_jax.evaluation.linear_probe import linear_probe  # noqa: E402
from clip_jax.evaluation.zeroshot import ensemble, zero_shot_scores  # noqa: E402
from tests.helpers.evaluation import clusters, folder_dataset, retrieval_dataset  # noqa: E402
from tests.helpers.oracles import (  # noqa: E402
    clip_benchmark_accuracy,
    perturb_torch_model,
    register_open_clip_tiny_vit,
)

TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "art of the {}."]


@pytest.fixture(autouse=True)
def numpy2_compat(monkeypatch):
    monkeypatch.setattr(cb_zeroshot, "accuracy", clip_benchmark_accuracy)
    monkeypatch.setattr(cb_linear, "accuracy", clip_benchmark_accuracy)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    reference = open_clip.create_model(register_open_clip_tiny_vit("clip-jax-eval-tiny"), pretrained=None).eval()
    perturb_torch_model(reference, scale=0.05)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    torch.save(reference.state_dict(), path)
    model, variables = clip_jax.load_checkpoint(path)
    return reference, model, variables


class _Items(list):
    """A list of (image, target) pairs that, like torchvision datasets, names its classes."""
    classes: list = []


def _torch_loader(spec, with_captions=False):
    """The images our pipeline decodes, as a torch DataLoader (NCHW) for CLIP_benchmark."""
    items = _Items()
    items.classes = data.class_names(spec) or []
    for batch in data.eval_batches(spec, batch_size=16, image_size=32):
        for row in np.nonzero(batch["mask"])[0]:
            target = batch["captions"][row] if with_captions else int(batch["labels"][row])
            items.append((torch.from_numpy(batch["images"][row].transpose(2, 0, 1).copy()), target))
    collate = (lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b])) if with_captions else None
    return torch.utils.data.DataLoader(items, batch_size=16, collate_fn=collate)


def _oc_tokenizer(texts):
    return open_clip.tokenize(texts)


def test_zeroshot_end_to_end(models, tmp_path):
    reference, model, variables = models
    spec = folder_dataset(str(tmp_path / "images"), classes=5, per_class=20)
    names = [f"class {c}" for c in range(5)]
    ours = run_evals(model, variables, [{"name": "z", "task": "zeroshot", "data": spec, "templates": TEMPLATES,
                                         "class_names": names, "batch_size": 32}])
    cb_templates = [t.replace("{}", "{c}") for t in TEMPLATES]
    theirs = cb_zeroshot.evaluate(reference, _torch_loader(spec), _oc_tokenizer, names, cb_templates, "cpu", amp=False)
    print("zero-shot ours", {k: round(v, 2) for k, v in ours.items()}, "CLIP_benchmark", theirs)
    assert ours["eval/z/top1"] == pytest.approx(100 * theirs["acc1"], abs=0.5)
    assert ours["eval/z/top5"] == pytest.approx(100 * theirs["acc5"], abs=0.5)
    assert ours["eval/z/mean_per_class_recall"] == pytest.approx(100 * theirs["mean_per_class_recall"], abs=0.5)


def test_retrieval_end_to_end(models, tmp_path):
    reference, model, variables = models
    spec, _ = retrieval_dataset(str(tmp_path), images=40, captions=2)
    ours = run_evals(model, variables, [{"name": "r", "task": "retrieval", "data": spec, "batch_size": 16}])
    theirs = cb_retrieval.evaluate(reference, _torch_loader(spec, with_captions=True), _oc_tokenizer, "cpu",
                                   amp=False, recall_k_list=[1, 5, 10])
    print("retrieval ours", {k: round(v, 2) for k, v in ours.items()}, "CLIP_benchmark", theirs)
    for k in (1, 5, 10):
        assert ours[f"eval/r/image_to_text_recall@{k}"] == pytest.approx(
            100 * theirs[f"text_retrieval_recall@{k}"], abs=0.5
        )
        assert ours[f"eval/r/text_to_image_recall@{k}"] == pytest.approx(
            100 * theirs[f"image_retrieval_recall@{k}"], abs=0.5
        )
    assert ours["eval/r/images"] == 40 and ours["eval/r/captions"] == 80


class _LookupModel(torch.nn.Module):
    """Stand-in CLIP for CLIP_benchmark: 'images' and token rows carry an index into
    fixed feature tables, so both sides score exactly the same features."""

    def __init__(self, image_features, text_features):
        super().__init__()
        self.image_features = torch.from_numpy(image_features)
        self.text_features = torch.from_numpy(text_features)

    def encode_image(self, index):
        return self.image_features[index[:, 0].long()]

    def encode_text(self, index):
        return self.text_features[index[:, 0].long()]


def test_zeroshot_with_signal():
    classes, per_class_prompts, dim = 10, 3, 24
    means = np.random.RandomState(1).randn(classes, dim)
    prompts = (means[:, None, :] + 0.8 * np.random.RandomState(2).randn(classes, per_class_prompts, dim)).astype(
        np.float32
    )
    images, labels = clusters(600, classes, dim, separation=1.0, seed=3, means_seed=1)
    scores = zero_shot_scores(images, ensemble(prompts))
    ours = classification_metrics(scores, labels, classes)

    text_rows = {f"t{c}_{t}": c * per_class_prompts + t for c in range(classes) for t in range(per_class_prompts)}
    tokenizer = lambda texts: torch.tensor([[text_rows[x]] for x in texts])  # noqa: E731
    model = _LookupModel(images, prompts.reshape(-1, dim))
    items = _Items((torch.tensor([i]), int(y)) for i, y in enumerate(labels))
    items.classes = list(range(classes))
    loader = torch.utils.data.DataLoader(items, batch_size=64)
    templates = [f"t{{c}}_{t}" for t in range(per_class_prompts)]
    theirs = cb_zeroshot.evaluate(
        model, loader, tokenizer, [str(c) for c in range(classes)], templates, "cpu", amp=False
    )
    print("zero-shot with signal: ours", ours, "CLIP_benchmark", theirs)
    assert 30 < ours["top1"] < 95  # real signal, not saturated
    assert ours["top1"] == pytest.approx(100 * theirs["acc1"], abs=0.5)
    assert ours["top5"] == pytest.approx(100 * theirs["acc5"], abs=0.5)
    assert ours["mean_per_class_recall"] == pytest.approx(100 * theirs["mean_per_class_recall"], abs=0.5)


def test_retrieval_with_signal():
    rs = np.random.RandomState(4)
    n_images, captions, dim = 150, 3, 24
    images = rs.randn(n_images, dim).astype(np.float32)
    texts = (np.repeat(images, captions, axis=0) + 1.3 * rs.randn(n_images * captions, dim)).astype(np.float32)
    text_image = np.repeat(np.arange(n_images), captions)
    ours = retrieval_metrics(images, texts, text_image)

    model = _LookupModel(images, texts)
    items = [(torch.tensor([i]), [f"{i * captions + j}" for j in range(captions)]) for i in range(n_images)]
    loader = torch.utils.data.DataLoader(
        items, batch_size=32, collate_fn=lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b])
    )
    tokenizer = lambda xs: torch.tensor([[int(x)] for x in xs])  # noqa: E731
    theirs = cb_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    print("retrieval with signal: ours", ours, "CLIP_benchmark", theirs)
    assert 10 < ours["text_to_image_recall@1"] < 90
    for k in (1, 5, 10):
        assert ours[f"image_to_text_recall@{k}"] == pytest.approx(100 * theirs[f"text_retrieval_recall@{k}"], abs=0.5)
        assert ours[f"text_to_image_recall@{k}"] == pytest.approx(100 * theirs[f"image_retrieval_recall@{k}"], abs=0.5)


class _NoCuda:
    """CLIP_benchmark's linear probe insists on CUDA; on a CPU-only machine make .cuda() and
    .to('cuda') no-ops for the duration (its arithmetic is unchanged)."""

    def __enter__(self):
        self.saved = torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to
        to = torch.Tensor.to
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
        torch.Tensor.to = lambda self, *a, **k: self if a and a[0] == "cuda" else to(self, *a, **k)

    def __exit__(self, *exc):
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to = self.saved


@pytest.mark.parametrize("kshot", [-1, 10])
def test_linear_probe_with_signal(tmp_path, kshot):
    classes, dim = 10, 32
    train_x, train_y = clusters(1500, classes, dim, separation=0.45, seed=5)
    val_x, val_y = clusters(400, classes, dim, separation=0.45, seed=6)
    test_x, test_y = clusters(2000, classes, dim, separation=0.45, seed=7)
    ours = linear_probe(
        train_x, train_y, test_x, test_y, classes, val_x=val_x, val_y=val_y, kshot=kshot if kshot > 0 else None, seed=0
    )

    # CLIP_benchmark reads cached features from feature_root/model_id; writing them there
    # ourselves skips its featurizer (which needs a dataset of images).
    feature_dir = tmp_path / "features" / "m"
    os.makedirs(feature_dir)
    for split, (x, y) in {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}.items():
        torch.save(torch.from_numpy(x), feature_dir / f"features_{split}.pt")
        torch.save(torch.from_numpy(y), feature_dir / f"targets_{split}.pt")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 30x faster for this tiny layer than contending for 2 cores
    with _NoCuda():
        theirs = cb_linear.evaluate(
            None,
            "unused",
            "unused",
            kshot,
            256,
            0,
            0.1,
            30,
            "m",
            0,
            str(tmp_path / "features"),
            "cuda",
            val_dataloader="unused",
            normalize=False,
            amp=False,
        )
    torch.set_num_threads(threads)
    print(f"linear probe k={kshot}: ours", ours, "CLIP_benchmark", {k: v for k, v in theirs.items()})
    assert 40 < ours["top1"] < 97
    # k-shot: the two sides draw different k examples per class, so a looser bound.
    tolerance = 1.0 if kshot < 0 else 3.0
    assert ours["top1"] == pytest.approx(100 * theirs["lp_acc1"], abs=tolerance)
    assert ours["mean_per_class_recall"] == pytest.approx(100 * theirs["lp_mean_per_class_recall"], abs=tolerance)
