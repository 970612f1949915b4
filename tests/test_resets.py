"""reset(mask), sample by sample, on every backend and cell.

Two claims, each checked per sample after a partial reset in the middle of a run:

- a reset sample is indistinguishable from a freshly built estimator's sample that
  sees the same signs (state, influence and gradient start from zero), and a sample
  that is not reset is untouched (equal to a twin that was never reset);
- the methods that are exact right after a reset are exact there: RTRL always,
  KF-RTRL (any number of chains) on the first step, OK(r) on the first r steps,
  TBPTT within its window. The exact value is RTRL's on the same schedule.
"""
import numpy as np
import pytest

import kfrtrl
from _helpers import rel_max

BACKENDS = kfrtrl.available_backends()
N_IN, N_HIDDEN, B = 2, 3, 5
MASK = np.array([True, False, True, True, False])       # the first sample among those reset
CELLS = {
    "elman": lambda: kfrtrl.Elman(N_IN, N_HIDDEN, alpha=0.7, rng=1),
    "elman-sigmoid": lambda: kfrtrl.Elman(N_IN, N_HIDDEN, activation="sigmoid", rng=1),
    "rhn": lambda: kfrtrl.RHN(N_IN, N_HIDDEN, rng=1),
    "rhn2-sigmoid": lambda: kfrtrl.RHN(N_IN, N_HIDDEN, depth=2, candidate="sigmoid", rng=1),
    "lstm": lambda: kfrtrl.LSTM(N_IN, N_HIDDEN, rng=1),
    "gru": lambda: kfrtrl.GRU(N_IN, N_HIDDEN, rng=1),
}
# name -> (constructor, steps after a reset during which the estimate is exact)
ESTIMATORS = {
    "rtrl": (lambda cell, **kw: kfrtrl.RTRL(cell, **kw), 4),
    "kf": (lambda cell, **kw: kfrtrl.KFRTRL(cell, **kw), 1),
    "kf3": (lambda cell, **kw: kfrtrl.KFRTRL(cell, n_chains=3, **kw), 1),
    "ok1": (lambda cell, **kw: kfrtrl.OK(cell, rank=1, **kw), 1),
    "ok3": (lambda cell, **kw: kfrtrl.OK(cell, rank=3, **kw), 3),
    "tbptt": (lambda cell, **kw: kfrtrl.TBPTT(cell, truncation=3, **kw), 3),
    "uoro": (lambda cell, **kw: kfrtrl.UORO(cell, **kw), 0),
    "nobacktrack": (lambda cell, **kw: kfrtrl.NoBackTrack(cell, **kw), 0),
}
T_BEFORE, T_AFTER = 5, 4


def _per_sample_gradients(est, dl):
    """gradient(dl) of each sample alone: [{name: array}] of length batch (gradient sums over the batch)."""
    out = []
    for b in range(est.batch_size):
        only = np.zeros_like(dl)
        only[b] = dl[b]
        out.append(est.gradient(only))
    return out


def _assert_close(got, want, tol, what):
    for name in want:
        assert rel_max(got[name], want[name]) <= tol, f"{what}, parameter {name}: {rel_max(got[name], want[name])}"


@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("est_name", ESTIMATORS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_samples_restart_and_the_others_continue(backend, est_name, cell_name, sequence):
    make, exact_steps = ESTIMATORS[est_name]
    cell = CELLS[cell_name]()
    xs, dls = sequence(T_BEFORE + T_AFTER, B, N_IN, N_HIDDEN, seed=2)

    def build():
        return make(cell, batch_size=B, rng=3, backend=backend, n_threads=2)

    est, twin, exact = build(), build(), kfrtrl.RTRL(cell, batch_size=B, backend="numpy")
    for t in range(T_BEFORE):
        for e in (est, twin, exact):
            e.step(xs[t])
    est.reset(MASK)
    exact.reset(MASK)
    assert not est.state[MASK].any() and np.array_equal(est.state[~MASK], twin.state[~MASK])
    fresh = build()                                     # same signs from here on as est
    fresh.rng.bit_generator.state = est.rng.bit_generator.state
    twin.rng.bit_generator.state = est.rng.bit_generator.state
    for k in range(T_AFTER):
        x, dl = xs[T_BEFORE + k], dls[T_BEFORE + k]
        h = est.step(x)
        np.testing.assert_array_equal(h[MASK], fresh.step(x)[MASK])
        np.testing.assert_array_equal(h[~MASK], twin.step(x)[~MASK])
        exact.step(x)
        got, new, old, want = (_per_sample_gradients(e, dl) for e in (est, fresh, twin, exact))
        for b in range(B):
            where = f"step {k + 1} after the reset, sample {b}"
            if MASK[b]:
                _assert_close(got[b], new[b], 1e-12, f"{where} (reset) vs a fresh estimator")
                if k < exact_steps:
                    _assert_close(got[b], want[b], 1e-10, f"{where} (reset) vs exact RTRL")
            else:
                _assert_close(got[b], old[b], 1e-12, f"{where} (kept) vs the twin never reset")
