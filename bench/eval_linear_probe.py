"""Linear-probe speed: the JAX solver with the full lambda search vs scikit-learn.

    python bench/eval_linear_probe.py [--n 10000] [--dim 768] [--classes 100] [--skip_sklearn]

Random Gaussian-cluster features (train n, val n/4, test n/4).  Reports wall times of
clip_jax.evaluation.linear_probe.linear_probe (the paper's search: 15 lambda fits on
train scored on val, then the refit on train + val), cold (with compilation) and warm;
of one JAX fit at lambda = 1; and of scikit-learn LogisticRegression(lbfgs, max_iter=1000)
at C = 1 and over the same protocol (the 15 lambdas the search tried, each fitted from
scratch as the paper does, plus the refit), all in the same process.  Prints the load
average, since timings on a shared machine depend on it.
"""
import argparse
import os
import platform
import time

import jax
import numpy as np

from clip_jax.evaluation import linear_probe as lp


def clusters(n, classes, dim, seed):
    means = np.random.RandomState(0).randn(classes, dim) * 0.15
    rs = np.random.RandomState(seed)
    y = rs.randint(0, classes, n)
    return (means[y] + rs.randn(n, dim)).astype(np.float32), y


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--skip_sklearn", action="store_true")
    args = parser.parse_args()
    x, y = clusters(args.n, args.classes, args.dim, 1)
    vx, vy = clusters(args.n // 4, args.classes, args.dim, 2)
    tx, ty = clusters(args.n // 4, args.classes, args.dim, 3)
    print(f"devices: {jax.devices()}  cpu: {platform.processor() or platform.machine()}  cores: {os.cpu_count()}  "
          f"load average: {os.getloadavg()[0]:.2f}")
    for label in ("cold (with compilation)", "warm"):
        start = time.perf_counter()
        result = lp.linear_probe(x, y, tx, ty, args.classes, val_x=vx, val_y=vy)
        print(f"jax search+refit {label}: {time.perf_counter() - start:.2f}s  lambda={result['lambda']:.3g} "
              f"top1={result['top1']:.2f} refit iterations={result['iterations']}")
    jax_total = time.perf_counter() - start
    _, history = lp.search_lambda(x, y, vx, vy, args.classes)
    start = time.perf_counter()
    w, b, iterations, _ = lp.fit(x, y, 1.0, num_classes=args.classes)
    w.block_until_ready()
    print(f"jax one lambda (lambda=1, warm): {time.perf_counter() - start:.2f}s  iterations={iterations}")
    if not args.skip_sklearn:
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        print(f"sklearn one lambda (C=1): {time.perf_counter() - start:.2f}s  iterations={clf.n_iter_[0]} "
              f"top1={100 * clf.score(tx, ty):.2f}")
        start = time.perf_counter()
        val_acc = {lam: LogisticRegression(C=1 / lam, max_iter=1000).fit(x, y).score(vx, vy) for lam in history}
        best = max(val_acc, key=lambda lam: (val_acc[lam], lam))
        final = LogisticRegression(C=1 / best, max_iter=1000).fit(np.concatenate([x, vx]), np.concatenate([y, vy]))
        sk_total = time.perf_counter() - start
        print(f"sklearn same protocol ({len(history)} lambdas + refit): {sk_total:.2f}s  lambda={best:.3g} "
              f"top1={100 * final.score(tx, ty):.2f}")
        print(f"ratio sklearn protocol / jax search+refit (warm): {sk_total / jax_total:.1f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
