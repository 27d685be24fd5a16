"""Metric definitions against scikit-learn, retrieval against a brute-force count, and the
JAX logistic regression against scikit-learn's LogisticRegression."""
import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
from sklearn.linear_model import LogisticRegression  # noqa: E402

from clip_jax.evaluation import classification_metrics, retrieval_metrics  # noqa: E402
from clip_jax.evaluation import linear_probe as lp  # noqa: E402  (the module)
from clip_jax.evaluation.linear_probe import linear_probe  # noqa: E402
from eval_helpers import clusters  # noqa: E402


def test_classification_metrics_match_sklearn(rng):
    labels = rng.randint(0, 7, 300)
    labels[labels == 3] = 2  # a class absent from the labels
    scores = rng.randn(300, 7) + 1.5 * np.eye(7)[labels]
    m = classification_metrics(scores, labels)
    assert m["top1"] == pytest.approx(100 * sklearn_metrics.accuracy_score(labels, scores.argmax(1)))
    assert m["top5"] == pytest.approx(100 * sklearn_metrics.top_k_accuracy_score(labels, scores, k=5, labels=range(7)))
    assert m["mean_per_class_recall"] == pytest.approx(100 * sklearn_metrics.balanced_accuracy_score(labels, scores.argmax(1)))
    with pytest.raises(ValueError, match="does not fit 7 classes"):
        classification_metrics(scores, np.full(300, 7))


def test_retrieval_metrics_brute_force(rng):
    images = rng.randn(30, 8)
    captions = [rng.randint(1, 4) for _ in range(30)]
    text_image = np.repeat(np.arange(30), captions)
    texts = images[text_image] + 1.2 * rng.randn(len(text_image), 8)
    m = retrieval_metrics(images, texts, text_image, chunk=7)
    cos = (texts / np.linalg.norm(texts, axis=1, keepdims=True)) @ (images / np.linalg.norm(images, axis=1, keepdims=True)).T
    for k in (1, 5, 10):
        t2i = np.mean([text_image[t] in np.argsort(-cos[t])[:k] for t in range(len(texts))])
        i2t = np.mean([bool(set(np.argsort(-cos[:, i])[:k]) & set(np.nonzero(text_image == i)[0])) for i in range(30)])
        assert m[f"text_to_image_recall@{k}"] == pytest.approx(100 * t2i)
        assert m[f"image_to_text_recall@{k}"] == pytest.approx(100 * i2t)
    assert 0 < m["text_to_image_recall@1"] < 100


@pytest.mark.parametrize("lam", [1.0, 100.0])
def test_logistic_regression_matches_sklearn(lam):
    x, y = clusters(400, 4, 12, separation=0.6, seed=0)
    w, b, iters = lp.fit(x, y, np.asarray([lam], np.float32), num_classes=4, tol=1e-6)
    reference = LogisticRegression(C=1 / lam, max_iter=1000, tol=1e-8).fit(x, y)
    # Softmax weights are identified up to a per-feature shift across classes; sklearn's
    # multinomial solution (like ours, penalised) has zero class-mean, so compare directly.
    np.testing.assert_allclose(np.asarray(w[0]), reference.coef_.T, atol=2e-3)
    assert int(iters[0]) < 1000
    ours = (x @ np.asarray(w[0]) + np.asarray(b[0])).argmax(1)
    assert np.mean(ours == reference.predict(x)) > 0.99


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
    kshot = linear_probe(x, y, tx, ty, 5, val_x=vx, val_y=vy, kshot=4, seed=1)
    assert kshot["train_examples"] == 20
    fit_idx, val_idx = lp.split_validation(y, seed=0)  # used when there is no val split
    assert len(val_idx) == 120 and not set(fit_idx) & set(val_idx) and len(fit_idx) + len(val_idx) == 600
    idx = lp.kshot_indices(y, 4, seed=1)
    assert np.all(np.bincount(y[idx]) == 4) and np.array_equal(idx, lp.kshot_indices(y, 4, seed=1))
    with pytest.raises(ValueError, match="only"):
        lp.kshot_indices(y, 1000)
