"""Exact RTRL on the Elman (tanh) cell: this package against a plain PyTorch exact RTRL, same run.

The PyTorch twin stores the influence state-major, J (n, P) with P = n (n + n_in + 1), and
advances it with the wide product ``J ← D_t (W_h J) + [immediate]`` (``torch.bmm``); the package
stores it tangent-major, G (P, n), and advances it with the tall product. Both compute the same
gradient (checked below on every run). Batch 1, float64, one thread (``torch.set_num_threads(1)``,
``n_threads=1``), the members timed alternately; also the same flops as one ``W @ wide`` GEMM.

Usage: ``python bench/vs_pytorch.py [--sizes 64,128,256] [--steps 40]`` (needs ``torch``); prints
one line per n with the median ms per step (step and gradient) of each member.
"""
import argparse
import statistics
import time

import numpy as np

import kfrtrl
from kfrtrl.threads import limit

N_IN = 8


class TorchExactRTRL:
    """h_t = tanh(W [h_{t−1}; x_t; 1]); J_t = D_t (W_h J_{t−1}) + D_t ⊗ [h_{t−1}; x_t; 1] (row i of block i)."""

    def __init__(self, W):
        import torch

        self.torch = torch
        self.W = torch.from_numpy(W)
        n, m = W.shape
        self.h = torch.zeros(n, dtype=torch.float64)
        self.J = torch.zeros(n, n * m, dtype=torch.float64)
        self.rows = torch.arange(n)

    def step(self, x):
        torch = self.torch
        n, m = self.W.shape
        a = torch.cat([self.h, torch.from_numpy(x), torch.ones(1, dtype=torch.float64)])
        h = torch.tanh(self.W @ a)
        d = 1.0 - h * h
        J = (self.W[:, :n] @ self.J).mul_(d[:, None])
        J.view(n, n, m)[self.rows, self.rows, :] += d[:, None] * a[None, :]
        self.h, self.J = h, J
        return h

    def gradient(self, c):
        return (self.torch.from_numpy(c) @ self.J).reshape(self.W.shape)


def _median_ms(fn, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def compare(n, steps, backends=("numba", "cython")):
    """{member: median ms per step} at n hidden units; raises if the gradients differ."""
    import torch

    torch.set_num_threads(1)
    gen = np.random.default_rng(n)
    xs = gen.standard_normal((steps + 3, N_IN))
    c = gen.standard_normal(n)
    cell = kfrtrl.Elman(N_IN, n, dtype=np.float64, rng=0)
    members = {"pytorch": TorchExactRTRL(cell.W.copy())}
    members.update({b: kfrtrl.RTRL(cell, batch_size=1, backend=b, n_threads=1) for b in backends
                    if b in kfrtrl.available_backends()})
    def run(name, x):
        est = members[name]
        if name == "pytorch":
            est.step(x)
            return est.gradient(c).numpy()
        est.step(x[None])
        return est.gradient(c[None])["W"]

    for x in xs[:3]:                                          # warm-up; the gradients agree
        grads = {name: run(name, x) for name in members}
        for g in grads.values():
            np.testing.assert_allclose(g, grads["pytorch"], rtol=1e-9, atol=1e-12)
    out = {name: _median_ms(lambda: run(name, xs[0]), steps) for name in members}
    P = n * (n + N_IN + 1)
    a, b = gen.standard_normal((n, n)), gen.standard_normal((n, P))
    with limit(1):
        out["gemm"] = _median_ms(lambda: np.matmul(a, b), steps)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    for n in (int(v) for v in args.sizes.split(",")):
        row = compare(n, args.steps if n < 256 else max(5, args.steps // 5))
        print(f"n={n}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
