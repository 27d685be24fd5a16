"""Linear probe: L2-regularised multinomial logistic regression on frozen features, in JAX.

The paper (App. A.3) fits scikit-learn's LogisticRegression (L-BFGS, max_iter 1000) on
raw features and picks the regularisation strength lambda = 1/C by a parametric binary
search on a validation split.  Here the same objective,

    mean_i CE(W x_i + b, y_i) + lambda / (2 n) * ||W||^2     (bias unpenalised),

which is sklearn's C * sum CE + ||W||^2 / 2 divided by C n, with sklearn's stopping rule
(max |gradient| <= tol = 1e-4, or max_iter; also after 3 steps without decrease, where
float32 can go no further), is minimised by one jitted lax.while_loop:

  - L-BFGS (10 pairs) on theta = [W; b], a [D + 1, K] matrix;
  - an exact line search that costs no pass over the features: the logits are linear in
    theta, so along a direction d they are Z + alpha * (X d), and the loss, its slope and
    its curvature in alpha need only Z and X d ([n, K]).  A safeguarded Newton iteration
    in alpha stops at strong-Wolfe conditions.  One iteration is then two matmuls with the
    features (X d and the gradient X^T R), the cost of one gradient evaluation;
  - lambda, the warm start, max_iter and tol are traced arguments: one compilation per
    feature shape, whatever the lambda.

Features are used raw, as in the paper (no standardisation), and placed on the device once.

Search: lambda on the grid 10^-6 .. 10^6 with 8 steps per decade (97 points); start at the
7 points 10^-6, 10^-4, ..., 10^6, then halve the step around the best (8, 4, 2, 1 grid
steps) scoring peak +/- step; the best validation top-1 wins (ties: the stronger
regularisation).  The fits run one at a time (a vmapped batch of lambdas would run every
lane until the slowest converges).  Each starts from zero, as sklearn's: with the loose
tolerance the stopping rule is part of the protocol (weakly regularised fits stop after
a few iterations, far from their optimum), so a warm start from a neighbouring lambda's
solution would change which model is scored.  warm_start=True does it anyway (each fit
from the nearest lambda already fitted, strong to weak; the refit from the chosen
lambda's solution): faster where fits are long, but no longer the paper's protocol.
The final model is refit on train + val and scored on test.
k-shot: k examples per class drawn from train with a seed; lambda is searched on val and
the final fit uses the k-shot examples only (adding val would exceed k per class).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from clip_jax.evaluation.metrics import classification_metrics

GRID = np.logspace(-6, 6, 97)
START = list(range(0, 97, 16))  # 1e-6, 1e-4, ..., 1e6
HISTORY = 10  # L-BFGS pairs, as scipy's default


def _dot(a, b):
    return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)


def _logits(theta, x):
    """x @ W + b with theta = [W; b]."""
    return _dot(x, theta[:-1]) + theta[-1]


def _vdot(a, b):
    return jnp.sum(a * b)


def _gradient(x, onehot, z, theta, lam, n):
    """Gradient of the objective at logits z = logits(theta, x)."""
    r = (jax.nn.softmax(z) - onehot) / n
    return jnp.concatenate([_dot(x.T, r) + (lam / n) * theta[:-1], jnp.sum(r, axis=0, keepdims=True)])


def _line(z, zd, onehot, theta, d, lam, n, alpha):
    """Objective, slope and curvature along theta + alpha d, from the logits z and their
    change zd = X d (plus d's bias row) alone."""
    logits = z + alpha * zd
    lse = jax.nn.logsumexp(logits, axis=1)
    p = jnp.exp(logits - lse[:, None])
    w, dw = theta[:-1], d[:-1]
    ww, wd, dd = _vdot(w, w), _vdot(w, dw), _vdot(dw, dw)
    ce = jnp.sum(lse - jnp.sum(onehot * logits, axis=1)) / n
    value = ce + lam / (2 * n) * (ww + 2 * alpha * wd + alpha ** 2 * dd)
    pz = jnp.sum(p * zd, axis=1)
    slope = jnp.sum(pz - jnp.sum(onehot * zd, axis=1)) / n + lam / n * (wd + alpha * dd)
    curvature = jnp.sum(jnp.sum(p * zd * zd, axis=1) - pz ** 2) / n + lam / n * dd
    return value, slope, curvature


def _line_search(z, zd, onehot, theta, d, lam, n, value0, slope0, max_steps=30):
    """A step alpha > 0 with the strong-Wolfe conditions (Armijo 1e-4, |slope| <= 0.1
    |slope0|) by Newton's method on the (convex) objective along d, kept inside the
    bracket of the minimum; falls back to bisection.  Returns (alpha, value)."""

    def body(carry):
        alpha, lo, hi, _, _, steps, best_alpha, best_value = carry
        value, slope, curvature = _line(z, zd, onehot, theta, d, lam, n, alpha)
        lo = jnp.where(slope < 0, alpha, lo)
        hi = jnp.where(slope >= 0, alpha, hi)
        newton = alpha - slope / jnp.maximum(curvature, 1e-30)
        inside = (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        fallback = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), 2.0 * jnp.maximum(alpha, 1.0))
        better = (alpha > 0) & (value < best_value)
        done = (alpha > 0) & (value <= value0 + 1e-4 * alpha * slope0) & (jnp.abs(slope) <= 0.1 * jnp.abs(slope0))
        next_alpha = jnp.where(done, alpha, jnp.where(inside, newton, fallback))
        return (next_alpha, lo, hi, done, value, steps + 1, jnp.where(better, alpha, best_alpha),
                jnp.where(better, value, best_value))

    def keep_going(carry):
        return (~carry[3]) & (carry[5] < max_steps)

    zero = jnp.zeros((), z.dtype)
    init = (zero, zero, jnp.full((), jnp.inf, z.dtype), jnp.array(False), value0, jnp.array(0), zero, value0)
    alpha, _, _, done, value, _, best_alpha, best_value = jax.lax.while_loop(keep_going, body, init)
    # Not converged (only near the float32 floor): the best point seen, or no step.
    return jnp.where(done, alpha, best_alpha), jnp.where(done, value, best_value)


def _direction(g, s_hist, y_hist, rho, newest, count):
    """-H g by the L-BFGS two-loop recursion over the `count` stored pairs (a ring buffer
    whose newest slot is `newest`)."""

    def backward(i, carry):
        q, alphas = carry
        j = (newest - i) % HISTORY
        a = jnp.where(i < count, rho[j] * _vdot(s_hist[j], q), 0.0)
        return q - a * y_hist[j], alphas.at[i].set(a)

    q, alphas = jax.lax.fori_loop(0, HISTORY, backward, (g, jnp.zeros(HISTORY, g.dtype)))
    sy, yy = _vdot(s_hist[newest], y_hist[newest]), _vdot(y_hist[newest], y_hist[newest])
    r = jnp.where(count > 0, sy / jnp.maximum(yy, 1e-30), 1.0) * q

    def forward(k, r):
        i = HISTORY - 1 - k
        j = (newest - i) % HISTORY
        b = jnp.where(i < count, rho[j] * _vdot(y_hist[j], r), 0.0)
        return r + (alphas[i] - b) * s_hist[j]

    return -jax.lax.fori_loop(0, HISTORY, forward, r)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _solve(x, y, lam, theta0, max_iter, tol, *, num_classes: int):
    n = jnp.asarray(x.shape[0], x.dtype)
    onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
    lam = jnp.asarray(lam, x.dtype)
    z = _logits(theta0, x)
    g = _gradient(x, onehot, z, theta0, lam, n)
    value, _, _ = _line(z, jnp.zeros_like(z), onehot, theta0, jnp.zeros_like(theta0), lam, n, 0.0)
    hist = jnp.zeros((HISTORY,) + theta0.shape, x.dtype)
    state = dict(theta=theta0, z=z, g=g, value=value, s=hist, y=hist, rho=jnp.zeros(HISTORY, x.dtype),
                 newest=jnp.array(HISTORY - 1), count=jnp.array(0), it=jnp.array(0), stalled=jnp.array(0))

    def keep_going(st):
        return (st["it"] < max_iter) & (jnp.max(jnp.abs(st["g"])) > tol) & (st["stalled"] < 3)

    def step(st):
        d = _direction(st["g"], st["s"], st["y"], st["rho"], st["newest"], st["count"])
        slope0 = _vdot(st["g"], d)
        restart = ~(slope0 < 0)  # not a descent direction (rounding): steepest descent, fresh memory
        d = jnp.where(restart, -st["g"], d)
        slope0 = jnp.where(restart, -_vdot(st["g"], st["g"]), slope0)
        count = jnp.where(restart, 0, st["count"])
        zd = _logits(d, x)
        alpha, value = _line_search(st["z"], zd, onehot, st["theta"], d, lam, n, st["value"], slope0)
        theta = st["theta"] + alpha * d
        z = st["z"] + alpha * zd
        g = _gradient(x, onehot, z, theta, lam, n)
        s, yv = alpha * d, g - st["g"]
        sy = _vdot(s, yv)
        keep = sy > 1e-10 * jnp.sqrt(_vdot(s, s) * _vdot(yv, yv))
        newest = jnp.where(keep, (st["newest"] + 1) % HISTORY, st["newest"])
        return dict(
            theta=theta, z=z, g=g, value=value,
            s=jnp.where(keep, st["s"].at[newest].set(s), st["s"]),
            y=jnp.where(keep, st["y"].at[newest].set(yv), st["y"]),
            rho=jnp.where(keep, st["rho"].at[newest].set(1.0 / jnp.where(keep, sy, 1.0)), st["rho"]),
            newest=newest, count=jnp.minimum(count + keep, HISTORY), it=st["it"] + 1,
            stalled=jnp.where(value < st["value"], 0, st["stalled"] + 1))

    state = jax.lax.while_loop(keep_going, step, state)
    return state["theta"], state["it"], state["value"]


def fit(x, y, lam: float, *, num_classes: int, max_iter: int = 1000, tol: float = 1e-4, init=None):
    """(W [D, K], b [K], iterations, objective) of one lambda; init: a (W, b) warm start.
    x and y may already be device arrays (they are then not copied again)."""
    x = jnp.asarray(x, jnp.float32)
    theta0 = (jnp.zeros((x.shape[1] + 1, num_classes), x.dtype) if init is None
              else jnp.concatenate([jnp.asarray(init[0], x.dtype), jnp.asarray(init[1], x.dtype)[None]]))
    theta, iterations, value = _solve(x, jnp.asarray(y, jnp.int32), lam, theta0, max_iter, tol,
                                      num_classes=num_classes)
    return theta[:-1], theta[-1], int(iterations), float(value)


@jax.jit
def _accuracy(theta, x, y):
    return jnp.mean(jnp.argmax(_logits(theta, x), axis=1) == y) * 100


def objective(x, y, w, b, lam: float) -> float:
    """The objective in float64 (NumPy), for tests and checks."""
    x, w, b = np.asarray(x, np.float64), np.asarray(w, np.float64), np.asarray(b, np.float64)
    logits = x @ w + b
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(y)), np.asarray(y)]) + lam / (2 * len(y)) * np.sum(w ** 2))


def search_lambda(train_x, train_y, val_x, val_y, num_classes: int, max_iter: int = 1000,
                  return_solutions: bool = False, warm_start: bool = False):
    """The best lambda on the validation split and {lambda: val top-1 %} of every fit
    (with return_solutions, also {grid index: (W, b)} of every fit)."""
    x, y = jnp.asarray(train_x, jnp.float32), jnp.asarray(train_y, jnp.int32)
    vx, vy = jnp.asarray(val_x, jnp.float32), jnp.asarray(val_y, jnp.int32)
    tried: dict[int, float] = {}
    solutions: dict[int, tuple] = {}

    def score(indices):
        # Strong to weak regularisation; each fit starts from the nearest solution so far.
        for i in sorted(dict.fromkeys(i for i in indices if i not in tried), reverse=True):
            near = min(solutions, key=lambda j: (abs(j - i), -j)) if solutions and warm_start else None
            w, b, _, _ = fit(x, y, float(GRID[i]), num_classes=num_classes, max_iter=max_iter,
                             init=solutions[near] if near is not None else None)
            if warm_start or return_solutions:
                solutions[i] = (w, b)
            tried[i] = float(_accuracy(jnp.concatenate([w, b[None]]), vx, vy))
        # max accuracy; among equals the largest lambda (strongest regularisation)
        return max(indices, key=lambda i: (tried[i], i))

    peak = score(START)
    for step in (8, 4, 2, 1):
        peak = score([max(peak - step, 0), peak, min(peak + step, len(GRID) - 1)])
    history = {float(GRID[i]): acc for i, acc in sorted(tried.items())}
    if return_solutions:
        return float(GRID[peak]), history, solutions
    return float(GRID[peak]), history


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
                 kshot: int | None = None, seed: int = 0, max_iter: int = 1000, lam: float | None = None,
                 warm_start: bool = False) -> dict:
    """top1, top5, mean_per_class_recall (%) on test, and the lambda chosen (or given)."""
    train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
    train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
    labelled = (("train", train_y), ("test", test_y)) + ((("val", np.asarray(val_y)),) if val_y is not None else ())
    for name, y in labelled:
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"linear probe: {name} labels range {y.min()}..{y.max()} does not fit {num_classes} classes"
            )
    if val_x is None:
        # No validation split: hold out part of train (k-shot draws from the rest).
        fit_idx, val_idx = split_validation(train_y, seed=seed)
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[fit_idx], train_y[fit_idx]
    val_x, val_y = np.asarray(val_x, np.float32), np.asarray(val_y, np.int32)
    if kshot:
        idx = kshot_indices(train_y, kshot, seed)
        train_x, train_y = train_x[idx], train_y[idx]
    history, init = {}, None
    if lam is None:
        found = search_lambda(
            train_x, train_y, val_x, val_y, num_classes, max_iter, return_solutions=warm_start, warm_start=warm_start
        )
        lam, history = found[:2]
        init = found[2][int(np.argmin(np.abs(GRID - lam)))] if warm_start else None
    if kshot:
        final_x, final_y = train_x, train_y
    else:
        final_x, final_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    w, b, iterations, _ = fit(final_x, final_y, lam, num_classes=num_classes, max_iter=max_iter, init=init)
    scores = np.asarray(_logits(jnp.concatenate([w, b[None]]), jnp.asarray(test_x)))
    metrics = classification_metrics(scores, test_y, num_classes)
    metrics.update(
        {"lambda": float(lam), "iterations": iterations, "train_examples": int(len(final_y)), "searched": len(history)}
    )
    return metrics
