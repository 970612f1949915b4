"""``python -m kfrtrl``: a short side-by-side of the estimators on one random stream.

For each estimator: mean relative error of its per-step gradient against
exact RTRL on the same inputs and loss signals, and the median time per step.
"""
import argparse
import time

import numpy as np

import kfrtrl


def _estimators(cell, backend, seed):
    return {
        "RTRL": kfrtrl.RTRL(cell, rng=seed, backend=backend),
        "UORO": kfrtrl.UORO(cell, rng=seed, backend=backend),
        "NoBackTrack": kfrtrl.NoBackTrack(cell, rng=seed, backend=backend),
        "KF-RTRL": kfrtrl.KFRTRL(cell, rng=seed, backend=backend),
        "OK(r=2)": kfrtrl.OK(cell, rank=2, rng=seed, backend=backend),
        "OK(r=8)": kfrtrl.OK(cell, rank=8, rng=seed, backend=backend),
        "TBPTT(25)": kfrtrl.TBPTT(cell, truncation=25, rng=seed, backend=backend),
    }


def side_by_side(n_hidden=16, n_in=4, steps=300, backend="auto", seed=0):
    """Run every estimator on one stream; return {name: (mean relative error, median µs/step)}."""
    cell = kfrtrl.Elman(n_in, n_hidden, rng=seed)
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((steps, 1, n_in))
    cs = rng.standard_normal((steps, 1, n_hidden))
    grads, times = {}, {}
    for name, est in _estimators(cell, backend, seed).items():
        grads[name], times[name] = [], []
        for t in range(steps):
            t0 = time.perf_counter()
            est.step(xs[t])
            g = est.gradient(cs[t])["W"]
            times[name].append(time.perf_counter() - t0)
            grads[name].append(g)
    exact = np.array(grads["RTRL"])
    norms = np.linalg.norm(exact.reshape(steps, -1), axis=1)
    return {
        name: (
            float(np.mean(np.linalg.norm((np.array(g) - exact).reshape(steps, -1), axis=1) / norms)),
            float(np.median(times[name]) * 1e6),
        )
        for name, g in grads.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kfrtrl", description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = side_by_side(args.hidden, steps=args.steps, backend=args.backend, seed=args.seed)
    print(f"Elman n={args.hidden}, batch 1, {args.steps} steps, backend {args.backend}")
    print(f"{'estimator':<12} {'rel. grad error':>16} {'µs/step':>10}")
    for name, (err, us) in results.items():
        print(f"{name:<12} {err:>16.3g} {us:>10.1f}")


if __name__ == "__main__":
    main()
