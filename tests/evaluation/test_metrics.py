"""Metric definitions against scikit-learn, retrieval against a brute-force count, and the
JAX logistic regression against scikit-learn's LogisticRegression."""
import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
from sklearn.linear_model import LogisticRegression  # noqa: E402

from clip_jax.evaluation import classification_metrics, retrieval_metrics  # noqa: E402
from clip_jax.evaluation import linear_probe as lp  # noqa: E402  (the module)
from clip_jax.evaluation.linear_probe import linear_probe  # noqa: E402
from tests.helpers.evaluation import clusters  # noqa: E402


def test_classification_metrics_match_sklearn(rng):
    labels = rng.randint(0, 7, 300)
    labels[labels == 3] = 2  # a class absent from the labels
    scores = rng.randn(300, 7) + 1.5 * np.eye(7)[labels]
    m = classification_metrics(scores, labels)
    assert m["top1"] == pytest.approx(100 * sklearn_metrics.accuracy_score(labels, scores.argmax(1)))
    assert m["top5"] == pytest.approx(100 * sklearn_metrics.top_k_accuracy_score(labels, scores, k=5, labels=range(7)))
    assert m["mean_per_class_recall"] == pytest.approx(
        100 * sklearn_metrics.balanced_accuracy_score(labels, scores.argmax(1))
    )
    with pytest.raises(ValueError, match="does not fit 7 classes"):
        classification_metrics(scores, np.full(300, 7))


def test_retrieval_metrics_brute_force(rng):
    images = rng.randn(30, 8)
    captions = [rng.randint(1, 4) for _ in range(30)]
    text_image = np.repeat(np.arange(30), captions)
    texts = images[text_image] + 1.2 * rng.randn(len(text_image), 8)
    m = retrieval_metrics(images, texts, text_image, chunk=7)
    cos = (texts / np.linalg.norm(texts, axis=1, keepdims=True)) @ (
        images / np.linalg.norm(images, axis=1, keepdims=True)
    ).T
    for k in (1, 5, 10):
        t2i = np.mean([text_image[t] in np.argsort(-cos[t])[:k] for t in range(len(texts))])
        i2t = np.mean([bool(set(np.argsort(-cos[:, i])[:k]) & set(np.nonzero(text_image == i)[0])) for i in range(30)])
        assert m[f"text_to_image_recall@{k}"] == pytest.approx(100 * t2i)
        assert m[f"image_to_text_recall@{k}"] == pytest.approx(100 * i2t)
    assert 0 < m["text_to_image_recall@1"] < 100


@pytest.mark.parametrize("lam", [1.0, 100.0])
def test_logistic_regression_matches_sklearn(lam):
    x, y = clusters(400, 4, 12, separation=0.6, seed=0)
    w, b, iters, _ = lp.fit(x, y, lam, num_classes=4, tol=1e-6)
    reference = LogisticRegression(C=1 / lam, max_iter=1000, tol=1e-8).fit(x, y)
    # Softmax weights are identified up to a per-feature shift across classes; sklearn's
    # multinomial solution (like ours, penalised) has zero class-mean, so compare directly.
    np.testing.assert_allclose(np.asarray(w), reference.coef_.T, atol=2e-3)
    assert iters < 1000
    ours = (x @ np.asarray(w) + np.asarray(b)).argmax(1)
    assert np.mean(ours == reference.predict(x)) > 0.99


def _reference_solve(x, y, lam, classes):
    """The plain solve: SciPy's L-BFGS-B in float64 on the same objective, tight tolerance."""
    from scipy.optimize import minimize

    x = x.astype(np.float64)
    n, d = x.shape
    onehot = np.eye(classes)[y]

    def value_and_grad(flat):
        w, b = flat[: d * classes].reshape(d, classes), flat[d * classes :]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        value = -np.mean(np.log(p[np.arange(n), y])) + lam / (2 * n) * np.sum(w**2)
        r = (p - onehot) / n
        return value, np.concatenate([(x.T @ r + lam / n * w).ravel(), r.sum(axis=0)])

    out = minimize(
        value_and_grad,
        np.zeros(d * classes + classes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20000, "gtol": 1e-10, "ftol": 1e-15},
    )
    return out.x[: d * classes].reshape(d, classes), out.x[d * classes :], out.fun


@pytest.mark.parametrize("lam", [1e-2, 1.0, 1e3])
def test_fast_solver_reaches_the_reference_optimum(lam):
    """The jitted L-BFGS with its logit-space line search ends at the optimum of a plain
    float64 solve: the objective within 1e-6 at a tight tolerance, whatever the start
    (zero or a warm start from another lambda's solution), and within 1e-4 at sklearn's
    default tolerance; one compilation serves every lambda (lambda is traced)."""
    x, y = clusters(500, 5, 16, separation=0.5, seed=4)
    ref_w, ref_b, ref_value = _reference_solve(x, y, lam, 5)
    w, b, iters, value = lp.fit(x, y, lam, num_classes=5, tol=1e-6)
    compiled = lp._solve._cache_size()
    assert lp.objective(x, y, w, b, lam) == pytest.approx(ref_value, abs=1e-6)
    assert value == pytest.approx(ref_value, abs=1e-5)  # the solver's own float32 value
    other_w, other_b, _, _ = lp.fit(x, y, lam * 1000, num_classes=5)
    warm = lp.fit(x, y, lam, num_classes=5, tol=1e-6, init=(other_w, other_b))
    assert lp.objective(x, y, warm[0], warm[1], lam) == pytest.approx(ref_value, abs=1e-6)
    loose = lp.fit(x, y, lam, num_classes=5)
    assert lp.objective(x, y, loose[0], loose[1], lam) == pytest.approx(ref_value, abs=1e-4)
    assert lp._solve._cache_size() == compiled  # no recompilation for other lambdas, tol or starts


def test_lambda_search_and_protocol():
    x, y = clusters(600, 5, 16, separation=0.5, seed=1)
    vx, vy = clusters(200, 5, 16, separation=0.5, seed=2)
    best, history = lp.search_lambda(x, y, vx, vy, 5)
    assert len(history) == 15 and best in history  # 7 starting points, then 2 per round for 4 rounds
    assert history[best] == max(history.values())
    assert set(np.round(np.log10(list(history)), 6)) >= {-6, -4, -2, 0, 2, 4, 6}
    tx, ty = clusters(500, 5, 16, separation=0.5, seed=3)
    full = linear_probe(x, y, tx, ty, 5, val_x=vx, val_y=vy)
    assert full["lambda"] == best and full["train_examples"] == 800  # refit on train + val
    assert 50 < full["top1"] < 100
    warm = linear_probe(x, y, tx, ty, 5, val_x=vx, val_y=vy, warm_start=True)  # the faster, non-paper variant
    assert warm["searched"] == 15 and 50 < warm["top1"] < 100
    kshot = linear_probe(x, y, tx, ty, 5, val_x=vx, val_y=vy, kshot=4, seed=1)
    assert kshot["train_examples"] == 20
    fit_idx, val_idx = lp.split_validation(y, seed=0)  # used when there is no val split
    assert len(val_idx) == 120 and not set(fit_idx) & set(val_idx) and len(fit_idx) + len(val_idx) == 600
    idx = lp.kshot_indices(y, 4, seed=1)
    assert np.all(np.bincount(y[idx]) == 4) and np.array_equal(idx, lp.kshot_indices(y, 4, seed=1))
    with pytest.raises(ValueError, match="only"):
        lp.kshot_indices(y, 1000)


def _stable_recalls(images, texts, text_image, k):
    """Recall@k by a stable argsort of the cosine scores: ties go to the lower index.
    Each score is its own float64 dot product, so equal vectors score exactly equal."""
    norm = lambda x: x / np.linalg.norm(x)  # noqa: E731
    cos = np.array([[np.dot(norm(t.astype(np.float64)), norm(i.astype(np.float64))) for i in images] for t in texts])
    t2i = np.mean([text_image[t] in np.argsort(-cos[t], kind="stable")[:k] for t in range(len(texts))])
    queries = np.unique(text_image)
    i2t = np.mean(
        [bool(set(np.argsort(-cos[:, i], kind="stable")[:k]) & set(np.nonzero(text_image == i)[0])) for i in queries]
    )
    return 100 * t2i, 100 * i2t


def test_retrieval_ties_rank_as_a_stable_sort(rng):
    """Exact duplicates: one caption shared by a third of the images, duplicate images,
    images with several captions and one with none.  A tied candidate ranks after the tied
    ones of lower index; with k = 1 the shared caption is a hit for one image only."""
    images = rng.randn(24, 8).astype(np.float32)
    images[5] = images[2]  # duplicate images
    images[17] = images[2]
    boiler = rng.randn(8).astype(np.float32)
    rows, owners = [], []
    for i in range(24):
        if i == 9:
            continue  # no caption
        if i % 3 == 0:
            rows.append(boiler)
            owners.append(i)
        else:
            for _ in range(1 + i % 2):
                rows.append(images[i] + 0.8 * rng.randn(8).astype(np.float32))
                owners.append(i)
    texts, text_image = np.stack(rows), np.asarray(owners)
    texts[-1] = texts[3]  # the same caption text on two images
    m = retrieval_metrics(images, texts, text_image, ks=(1, 2, 5, 10))
    for k in (1, 2, 5, 10):
        t2i, i2t = _stable_recalls(images, texts, text_image, k)
        assert m[f"text_to_image_recall@{k}"] == pytest.approx(t2i)
        assert m[f"image_to_text_recall@{k}"] == pytest.approx(i2t)
    # Everything tied (a constant model): only the first candidate is ever ranked first.
    m = retrieval_metrics(np.ones((6, 4)), np.ones((9, 4)), np.repeat(np.arange(3), 3))
    assert m["text_to_image_recall@1"] == pytest.approx(100 * 3 / 9)  # the captions of image 0
    assert m["image_to_text_recall@1"] == pytest.approx(100 / 3)  # image 0 of the 3 with captions
    assert m["image_to_text_recall@5"] == pytest.approx(200 / 3)  # captions 0-4 belong to images 0, 1


def test_classification_ties_go_to_the_first_class():
    """Equal scores (duplicate class names, constant features): the first maximum is the
    prediction, as torch.argmax and numpy.argmax; top-5 needs 5 classes."""
    torch = pytest.importorskip("torch")
    scores = np.array(
        [[0.2, 0.5, 0.5, 0.1, 0.5, 0.0], [0.3, 0.3, 0.3, 0.3, 0.3, 0.3], [0.0, 0.1, 0.9, 0.9, 0.2, 0.2]], np.float32
    )
    labels = np.array([2, 0, 3])
    m = classification_metrics(scores, labels)
    first = torch.from_numpy(scores).argmax(dim=1).numpy()
    assert list(first) == [1, 0, 2]
    assert m["top1"] == pytest.approx(100 * np.mean(first == labels))
    assert m["mean_per_class_recall"] == pytest.approx(100 * sklearn_metrics.balanced_accuracy_score(labels, first))
    # Top-5 of a tied row keeps the lowest indices: row 1 has classes 0-4, so label 5 would miss.
    assert classification_metrics(scores[1:2], np.array([5]))["top5"] == 0.0
    assert classification_metrics(scores[1:2], np.array([4]))["top5"] == 100.0
    few = classification_metrics(scores[:, :3], np.array([2, 0, 1]))
    assert "top5" not in few and few["top1"] == pytest.approx(100 / 3)


def test_linear_probe_on_constant_and_duplicate_features_matches_sklearn():
    """Constant features leave only the bias: both predict the most frequent class.
    Duplicate rows with different labels are fitted as sklearn fits them."""
    y = np.array([0] * 30 + [1] * 50 + [2] * 20)
    test_y = np.array([0, 1, 2] * 10)
    constant = linear_probe(np.ones((100, 6), np.float32), y, np.ones((30, 6), np.float32), test_y, 3, lam=1.0)
    reference = LogisticRegression(C=1.0).fit(np.ones((100, 6)), y).predict(np.ones((30, 6)))
    assert set(reference) == {1}
    assert constant["top1"] == pytest.approx(100 * np.mean(reference == test_y))
    x, _ = clusters(100, 3, 5, separation=1.0, seed=8)
    x[50:] = x[:50]  # every row twice, with independent labels
    w, b, _, _ = lp.fit(x, y, 1.0, num_classes=3, tol=1e-6)
    ours = (x @ np.asarray(w) + np.asarray(b)).argmax(1)
    theirs = LogisticRegression(C=1.0, tol=1e-8, max_iter=1000).fit(x, y).predict(x)
    assert np.mean(ours == theirs) >= 0.98
