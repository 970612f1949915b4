"""Kernel benchmarks: one online step of every estimator and backend next to its GEMM lower bound.

Run::

    python -m pytest bench/test_kernels.py --benchmark-only --benchmark-json=kernels.json
    python bench/ratios.py kernels.json          # each step's median / its group's GEMM median

On a shared machine add ``--benchmark-timer=time.process_time`` (CPU time of
the process: robust to other load, and equal to wall time at 1 thread).

Each benchmark group is one problem size, ``<family> n=.. B=.. r=..``, and
holds the bare product that bounds the step from below plus ``est.step`` of
every estimator of the family on every available backend, run in that order group
by group (the GEMM right before the steps it bounds):

- ``kron`` (KF-RTRL with r chains, OK of rank r): (B·r·n, n) @ (n, n) GEMM;
- ``rtrl`` (exact RTRL; n in {16, 64, 128} at batch 1, n <= 16 (full grid: 64)
  at larger batches): (B·n·m, n) @ (n, n) GEMM, m = n + n_in + 1;
- ``rank1`` (UORO, NoBackTrack, TBPTT's step, SnAp-1, RFLO; also at n = 256): the cell's
  (B, m) @ (m, n) product, at batch 1 one (n, m) matrix-vector product.

Each bound is timed in both orders of the same flops, (rows, inner) @ (inner, cols) and
(cols, inner) @ (inner, rows) (``gemm-wide``): BLAS runs one faster than the other (the tall
(P, N) @ (N, N) ~20 % slower than the wide (N, N) @ (N, P) in float64 here), and
``bench/ratios.py`` divides by the faster.

``extra_info`` carries the kind ("gemm"/"step"), estimator, backend, sizes,
threads and the GEMM's flop count. Quick grid by default (~2 minutes);
``KFRTRL_BENCH_FULL=1`` runs n in {16, 64, 128, 256}, batch {1, 16}, rank {1, 8}.
Threads: ``KFRTRL_BENCH_THREADS`` (default 1, see conftest.py). Float64.
"""
import itertools
import os

import numpy as np
import pytest

import kfrtrl
from kfrtrl.estimators import make_estimator
from kfrtrl.threads import limit

FULL = os.environ.get("KFRTRL_BENCH_FULL") == "1"
SIZES = (16, 64, 128, 256) if FULL else (16, 128)
BATCHES = (1, 16)
RANKS = (1, 8)
RTRL_B1_SIZES = (16, 64, 128)             # exact RTRL holds B·n·m·n numbers (17 MB at n = 128, B = 1)
RTRL_MAX_N = 64 if FULL else 16           # ... and at larger batches only up to this n
RANK1_SIZES = tuple(sorted(set(SIZES) | {256}))   # the rank-one steps are cheap at any n
MAX_BYTES = 2 * 2**30                      # skip a case whose influence arrays would exceed this
N_IN = 8
BACKENDS = kfrtrl.available_backends()

#: the estimators of each family, as specs of the registry ("{r}": the group's chains or rank)
FAMILIES = {"kron": ("kf:{r}", "ok:{r}"), "rtrl": ("rtrl",), "rank1": ("uoro", "nobacktrack", "tbptt:25", "snap1", "rflo")}


def _gemm_shape(family, n, B, r):
    """(rows, inner, cols) of the product bounding the family's step."""
    m = n + N_IN + 1
    return {"kron": (B * r * n, n, n), "rtrl": (B * n * m, n, n), "rank1": (B, m, n)}[family]


def _sizes(family, B):
    """The n of a family's groups at batch B."""
    if family == "rtrl":
        return RTRL_B1_SIZES if B == 1 else tuple(n for n in SIZES if n <= RTRL_MAX_N)
    return RANK1_SIZES if family == "rank1" else SIZES


def _cases():
    for family, B, r in itertools.product(FAMILIES, BATCHES, RANKS):
        if family != "kron" and r != RANKS[0]:
            continue                                   # rank only matters for KF/OK
        for n in _sizes(family, B):
            rows, inner, cols = _gemm_shape(family, n, B, r)
            if 3 * rows * cols * 8 <= MAX_BYTES:       # influence, its update and temporaries
                yield family, n, B, r


CASES = list(_cases())


def _group(family, n, B, r):
    return f"{family} n={n} B={B}" + (f" r={r}" if family == "kron" else "")


def _info(benchmark, kind, family, n, B, r, threads, wide=False, **extra):
    rows, inner, cols = _gemm_shape(family, n, B, r)
    if wide:
        rows, cols = cols, rows
    benchmark.group = _group(family, n, B, r)
    benchmark.extra_info.update(kind=kind, family=family, n=n, batch=B, rank=r, threads=threads,
                                gemm_shape=[rows, inner, cols], flops=2 * rows * inner * cols, **extra)


MEMBERS = [(family, n, B, r, what) for family, n, B, r in CASES
           for what in ["gemm", "gemm-wide"] + [f"{est.format(r=r)}/{backend}" for est in FAMILIES[family]
                                                for backend in BACKENDS]]


@pytest.mark.parametrize("family, n, B, r, what", MEMBERS)
def test_group_member(benchmark, limited_threads, family, n, B, r, what):
    """One member of a group: its GEMM lower bound (``what="gemm"``) or ``"<estimator>/<backend>"``'s step.

    Members run group by group, the GEMM right before the steps it bounds, so that each
    ratio compares timings taken minutes apart at most (this machine's GEMM rate drifts by
    up to 20% over a longer run).
    """
    if what.startswith("gemm"):
        _bench_gemm(benchmark, limited_threads, family, n, B, r, wide=what == "gemm-wide")
    else:
        estimator, backend = what.split("/")
        _bench_step(benchmark, limited_threads, family, estimator, backend, n, B, r)


def _bench_gemm(benchmark, threads, family, n, B, r, wide=False):
    """The bare product (float64, BLAS) that lower-bounds the step of the group, in its tall order
    or (``wide``) the other order of the same flops."""
    rows, inner, cols = _gemm_shape(family, n, B, r)
    if wide:
        rows, cols = cols, rows
    gen = np.random.default_rng(0)
    X, W = gen.standard_normal((rows, inner)), gen.standard_normal((inner, cols))
    out = np.empty((rows, cols))
    _info(benchmark, "gemm", family, n, B, r, threads, wide=wide)
    benchmark(np.matmul, X, W, out=out)


def _bench_step(benchmark, threads, family, estimator, backend, n, B, r):
    """``est.step(x)`` with fresh random inputs, after a few warm-up steps (compilation, transients).

    The estimator gets ``n_threads`` explicitly, so each step includes its
    :func:`kfrtrl.threads.limit` call (see :func:`test_thread_limit`).
    """
    cell = kfrtrl.Elman(N_IN, n, rng=0)
    est = make_estimator(estimator, cell, batch_size=B, rng=1, backend=backend, n_threads=threads)
    xs = np.random.default_rng(2).standard_normal((64, B, N_IN))
    for x in xs[: r + 3]:
        est.step(x)
    inputs = itertools.cycle(xs)
    _info(benchmark, "step", family, n, B, r, threads, estimator=estimator, backend=backend)
    benchmark(lambda: est.step(next(inputs)))


def test_thread_limit(benchmark, limited_threads):
    """Cost of entering and leaving :func:`kfrtrl.threads.limit`, paid per step when n_threads is given."""
    benchmark.group = "overhead"
    benchmark.extra_info.update(kind="overhead", threads=limited_threads)

    def enter_and_leave():
        with limit(limited_threads):
            pass

    benchmark(enter_and_leave)
