"""Long-run stability: every estimator × cell trained online in float32 on the copy task.

Opt-in and slow (not in testpaths)::

    KFRTRL_LONG_STEPS=100000 python -m pytest bench/test_long_run.py -s

``KFRTRL_LONG_STEPS`` (default 100000) steps of batch 4 at n = 16 (``KFRTRL_LONG_N``),
one thread, Adam lr 1e-3 clipped to 1, on the copy task with its curriculum: every new
string resets its sample (``reset(mask)`` thousands of times). Each run must stay finite
and keep every influence factor entry below ``FACTOR_BOUND`` (the KF/OK norm balancing
and UORO's ρ's exist to keep them so); the line printed per run gives the largest
factor entry, the largest cell weight entry, the final T_cur and the last 1000 steps' loss.
"""
import os
import time

import numpy as np
import pytest

import kfrtrl
from kfrtrl import tasks, train

STEPS = int(os.environ.get("KFRTRL_LONG_STEPS", "100000"))
N = int(os.environ.get("KFRTRL_LONG_N", "16"))
FACTOR_BOUND = 1e4
SPECS = ["rtrl", "uoro", "nobacktrack", "kf:2", "ok:2", "tbptt:8"]
CELLS = {
    "elman": lambda **kw: kfrtrl.Elman(4, N, **kw),
    "elman-sigmoid": lambda **kw: kfrtrl.Elman(4, N, alpha=0.5, activation="sigmoid", **kw),
    "rhn": lambda **kw: kfrtrl.RHN(4, N, **kw),
    "lstm": lambda **kw: kfrtrl.LSTM(4, N, **kw),
    "gru": lambda **kw: kfrtrl.GRU(4, N, **kw),
}
_FACTORS = ("_G", "_A", "_u", "_v", "_w")       # the influence state of each estimator family


def _largest_factor(est):
    """Largest |entry| of the estimator's influence factors (0 for TBPTT, which keeps none)."""
    largest = 0.0
    for attr in _FACTORS:
        value = getattr(est, attr, None)
        for arr in (value.values() if isinstance(value, dict) else [value] if value is not None else []):
            largest = max(largest, float(np.abs(arr).max()))
    return largest


@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("spec", SPECS)
def test_long_run_stays_finite_with_bounded_factors(spec, cell_name):
    cell = CELLS[cell_name](dtype=np.float32, rng=1)
    est = train.make_estimator(spec, cell, batch_size=4, rng=2, n_threads=1)
    trainer = train.Trainer(est, 4, lr=1e-3, clip=1.0, rng=3)
    task = tasks.CopyTask(4, rng=4, dtype=np.float32)
    largest = {"factor": 0.0, "weight": 0.0}
    resets = 0
    losses = []
    start = time.perf_counter()
    for step in range(STEPS):
        x, y, reset = task.next()
        resets += int(reset.sum())
        loss = trainer.step(x, y, reset)
        task.observe(loss)
        losses.append(float(np.mean(loss)))
        if step % 97 == 0 or step == STEPS - 1:     # sampled: a full scan every step would double the cost
            largest["factor"] = max(largest["factor"], _largest_factor(est))
            largest["weight"] = max(largest["weight"], max(float(np.abs(W).max()) for W in cell.params().values()))
    seconds = time.perf_counter() - start
    print(f"\n[long run] {spec:12s} {cell_name:14s} steps {STEPS} resets {resets} backend {est.backend:6s} "
          f"max|factor| {largest['factor']:.3g} max|weight| {largest['weight']:.3g} T_cur {task.T_cur} "
          f"loss(last 1000) {np.mean(losses[-1000:]):.3f} bits  {seconds:.0f} s", end="")
    assert all(np.isfinite(W).all() for W in cell.params().values())
    assert np.isfinite(trainer.readout.W).all() and np.isfinite(est.state).all()
    assert largest["factor"] < FACTOR_BOUND
