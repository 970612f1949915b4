"""Scaling benchmarks: time of one online step (step + gradient) of every estimator against n.

Run, then report (table with fitted exponents, optional log-log plot)::

    python -m pytest bench/test_scaling.py --benchmark-json=scaling.json
    kfrtrl bench --from scaling.json --plot scaling.png

Grid (:func:`kfrtrl.scaling.grid`): by default float64, batch 1, n = 16 … 512;
``KFRTRL_BENCH_FULL=1`` adds batch 16 and float32. ``KFRTRL_BENCH_CELLS``
picks the cells, comma-separated (default "elman"; e.g. "elman,rhn,rhn3,lstm,gru",
see :func:`kfrtrl.scaling.parse_cell`). ``KFRTRL_BENCH_BACKEND``
picks the backend (default "auto"), ``KFRTRL_BENCH_THREADS`` the thread count
(default 1, see bench/conftest.py), for the whole step: forward pass and
gradient included, not only the estimator's propagation. Groups are (cell, dtype, batch, n), so each
group compares the estimators at one size. A size predicted (from the smaller sizes already run)
to take over 2 s per step or 2 GiB of state is skipped, which stops exact RTRL.
Each entry's extra_info holds the estimator state and peak bytes per sample
and the median time of the step's GEMM lower bound, measured in the same test.
"""
import os

import pytest

from kfrtrl import scaling

GRID = scaling.grid(full=os.environ.get("KFRTRL_BENCH_FULL") == "1")


def _cells():
    """KFRTRL_BENCH_CELLS as cell labels (default: the grid's)."""
    text = os.environ.get("KFRTRL_BENCH_CELLS", ",".join(GRID["cells"]))
    try:
        return [scaling.canonical_cell(c) for c in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"KFRTRL_BENCH_CELLS: {exc}") from None


CELLS = _cells()
BACKEND = os.environ.get("KFRTRL_BENCH_BACKEND", "auto")
ROUNDS = 5
BUDGET = scaling.Budget()
# n before estimator, so that every (cell, estimator, batch, dtype) meets its sizes in increasing order
CASES = [
    (cell, dtype, batch, n, label)
    for cell in CELLS for dtype in GRID["dtypes"] for batch in GRID["batches"] for n in GRID["sizes"]
    for label in GRID["estimators"]
]


@pytest.mark.parametrize(
    ("cell", "dtype", "batch", "n", "label"), CASES, ids=[f"{c}-{d}-b{b}-n{n}-{e}" for c, d, b, n, e in CASES]
)
def test_step(benchmark, limited_threads, cell, dtype, batch, n, label):
    key = (cell, label, batch, dtype)
    reason = BUDGET.skip_reason(key, n)
    if reason:
        pytest.skip(reason)
    work = scaling.Workload(label, n, batch, dtype, BACKEND, limited_threads, cell=cell)
    work.warm_up()  # compilation, first-touch allocation and TBPTT's filling window stay out of the timing
    benchmark.group = f"scaling {cell} {dtype} batch={batch} n={n}"
    benchmark.pedantic(work.step, rounds=ROUNDS, iterations=scaling.calls_per_round(work.step))
    benchmark.extra_info.update(work.info(ROUNDS))
    if benchmark.enabled:
        BUDGET.record(key, n, benchmark.stats.stats.median, work.state_bytes() * batch)
