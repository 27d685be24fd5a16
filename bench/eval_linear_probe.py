"""Linear-probe speed: the JAX solver with the full lambda search vs scikit-learn for one lambda.

    python bench/eval_linear_probe.py [--n 10000] [--dim 768] [--classes 100] [--skip_sklearn]

Random Gaussian-cluster features (train n, val n/4, test n/4).  Reports wall times of
clip_jax.evaluation.linear_probe.linear_probe (15 lambda fits + the refit, compile
included and warm) and of sklearn LogisticRegression(lbfgs, max_iter=1000) at C = 1.
"""
import argparse
import platform
import time

import jax
import numpy as np

from clip_jax.evaluation.linear_probe import linear_probe


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
    print(f"devices: {jax.devices()}  cpu: {platform.processor() or platform.machine()}")
    for label in ("cold (with compilation)", "warm"):
        start = time.perf_counter()
        result = linear_probe(x, y, tx, ty, args.classes, val_x=vx, val_y=vy)
        print(f"jax search+refit {label}: {time.perf_counter() - start:.2f}s  "
              f"lambda={result['lambda']:.3g} top1={result['top1']:.2f} refit iterations={result['iterations']}")
    if not args.skip_sklearn:
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        print(f"sklearn one lambda (C=1): {time.perf_counter() - start:.2f}s  iterations={clf.n_iter_[0]} "
              f"top1={100 * clf.score(tx, ty):.2f}")


if __name__ == "__main__":
    main()
