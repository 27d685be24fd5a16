"""Linear probe: L2-regularised multinomial logistic regression on frozen features, in JAX.

The paper (App. A.3) fits scikit-learn's LogisticRegression (L-BFGS, max_iter 1000) on
raw features and picks the regularisation strength lambda = 1/C by a parametric binary
search on a validation split.  Here the same objective,

    mean_i CE(W x_i + b, y_i) + lambda / (2 n) * ||W||^2     (bias unpenalised),

which is sklearn's C * sum CE + ||W||^2 / 2 divided by C n, is minimised with optax's
L-BFGS inside one jitted while_loop, and several lambdas are fitted at once with vmap,
so a whole search runs on the accelerator.  Features are used raw, as in the paper (no
standardisation).  Stopping rule as sklearn: max |gradient| <= tol (1e-4) or max_iter.

Search: lambda on the grid 10^-6 .. 10^6 with 8 steps per decade (97 points); start at
the 7 points 10^-6, 10^-4, ..., 10^6, then halve the step around the best (8, 4, 2, 1
grid steps) scoring peak +/- step; the best validation top-1 wins (ties: the stronger
regularisation).  The final model is refit on train + val and scored on test.
k-shot: k examples per class drawn from train with a seed; lambda is searched on val and
the final fit uses the k-shot examples only (adding val would exceed k per class).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clip_jax.evaluation.metrics import classification_metrics

GRID = np.logspace(-6, 6, 97)
START = list(range(0, 97, 16))  # 1e-6, 1e-4, ..., 1e6


def _logits(params, x):
    w, b = params
    return jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST) + b


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter"))
def fit(x, y, lambdas, *, num_classes: int, max_iter: int = 1000, tol: float = 1e-4):
    """(W [L, D, K], b [L, K], iterations [L]) for each of the L lambdas."""
    n, d = x.shape
    onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)

    def solve(lam):
        def loss(params):
            ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(_logits(params, x)), axis=-1))
            return ce + lam / (2 * n) * jnp.sum(params[0] ** 2)

        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(carry):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
            return optax.apply_updates(params, updates), state

        def keep_going(carry):
            _, state = carry
            count = optax.tree_utils.tree_get(state, "count")
            grad = optax.tree_utils.tree_get(state, "grad")
            grad_max = jnp.maximum(jnp.max(jnp.abs(grad[0])), jnp.max(jnp.abs(grad[1])))
            return (count == 0) | ((count < max_iter) & (grad_max > tol))

        init = (jnp.zeros((d, num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))
        params, state = jax.lax.while_loop(keep_going, step, (init, opt.init(init)))
        return params[0], params[1], optax.tree_utils.tree_get(state, "count")

    return jax.vmap(solve)(lambdas)


def _scores(w, b, x):
    return np.asarray(_logits((jnp.asarray(w), jnp.asarray(b)), jnp.asarray(x)))


def search_lambda(train_x, train_y, val_x, val_y, num_classes: int, max_iter: int = 1000) -> tuple[float, dict]:
    """The best lambda on the validation split and {lambda: val top-1 %} of every fit."""
    tried: dict[int, float] = {}

    def score(indices):
        new = [i for i in dict.fromkeys(indices) if i not in tried]
        if new:
            # Pad to 7 (first call) or 2 lambdas (later rounds): two compilations in all.
            size = len(START) if not tried else 2
            padded = (new + [new[-1]] * size)[: max(size, len(new))]
            w, b, _ = fit(train_x, train_y, jnp.asarray(GRID[padded], jnp.float32), num_classes=num_classes,
                          max_iter=max_iter)
            for j, i in enumerate(new):
                tried[i] = float(np.mean(_scores(w[j], b[j], val_x).argmax(1) == val_y)) * 100
        # max accuracy; among equals the largest lambda (strongest regularisation)
        return max(indices, key=lambda i: (tried[i], i))

    peak = score(START)
    for step in (8, 4, 2, 1):
        peak = score([max(peak - step, 0), peak, min(peak + step, len(GRID) - 1)])
    return float(GRID[peak]), {float(GRID[i]): acc for i, acc in sorted(tried.items())}


def kshot_indices(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k indices per class, drawn without replacement with `seed`; sorted."""
    rs = np.random.RandomState(seed)
    picked = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        if len(members) < k:
            raise ValueError(f"{k}-shot: class {c} has only {len(members)} training examples")
        picked.append(rs.choice(members, k, replace=False))
    return np.sort(np.concatenate(picked))


def split_validation(labels: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic (train, val) index split of a training set that has no val split."""
    order = np.random.RandomState(seed).permutation(len(labels))
    cut = int(round(len(labels) * fraction))
    if cut < 1 or cut >= len(labels):
        raise ValueError(f"cannot split {len(labels)} training examples into train and validation")
    return np.sort(order[cut:]), np.sort(order[:cut])


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, *, val_x=None, val_y=None,
                 kshot: int | None = None, seed: int = 0, max_iter: int = 1000, lam: float | None = None) -> dict:
    """top1, top5, mean_per_class_recall (%) on test, and the lambda chosen (or given)."""
    train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
    train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
    for name, y in (("train", train_y), ("test", test_y)) + ((("val", np.asarray(val_y)),) if val_y is not None else ()):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"linear probe: {name} labels range {y.min()}..{y.max()} does not fit {num_classes} classes")
    if val_x is None:
        # No validation split: hold out part of train (k-shot draws from the rest).
        fit_idx, val_idx = split_validation(train_y, seed=seed)
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[fit_idx], train_y[fit_idx]
    val_x, val_y = np.asarray(val_x, np.float32), np.asarray(val_y, np.int32)
    if kshot:
        idx = kshot_indices(train_y, kshot, seed)
        train_x, train_y = train_x[idx], train_y[idx]
    history = {}
    if lam is None:
        lam, history = search_lambda(train_x, train_y, val_x, val_y, num_classes, max_iter)
    if kshot:
        final_x, final_y = train_x, train_y
    else:
        final_x, final_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    w, b, iters = fit(final_x, final_y, jnp.asarray([lam], jnp.float32), num_classes=num_classes, max_iter=max_iter)
    metrics = classification_metrics(_scores(w[0], b[0], test_x), test_y, num_classes)
    metrics.update({"lambda": float(lam), "iterations": int(iters[0]), "train_examples": int(len(final_y)),
                    "searched": len(history)})
    return metrics
