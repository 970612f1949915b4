"""The exact methods against each other: finite differences -> bptt -> RTRL, TBPTT, resets, float32."""
import itertools

import numpy as np
import pytest

import kfrtrl
from _helpers import sequence_loss

N_IN, N_HIDDEN = 2, 4


ACTIVATIONS = ["tanh", "sigmoid"]                   # the other cells: tests/test_cells.py


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("batch", [1, 3])
def test_bptt_matches_central_differences(alpha, batch, activation, sequence):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=alpha, activation=activation, rng=10)
    xs, dl_dhs = sequence(30, batch, N_IN, N_HIDDEN, seed=11)
    g = kfrtrl.bptt(cell, xs, dl_dhs)["W"]
    eps = 1e-6
    fd = np.zeros_like(cell.W)
    for idx in np.ndindex(cell.W.shape):
        w0 = cell.W[idx]
        cell.W[idx] = w0 + eps
        plus = sequence_loss(cell, xs, dl_dhs)
        cell.W[idx] = w0 - eps
        minus = sequence_loss(cell, xs, dl_dhs)
        cell.W[idx] = w0
        fd[idx] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("batch", [1, 4])
def test_rtrl_summed_equals_bptt(alpha, batch, activation, sequence, run_online, relative_error):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=alpha, activation=activation, rng=1)
    xs, dl_dhs = sequence(35, batch, N_IN, N_HIDDEN, seed=2)
    est = kfrtrl.RTRL(cell, batch_size=batch, backend="numpy")
    online = run_online(est, xs, dl_dhs)["W"]
    exact = kfrtrl.bptt(cell, xs, dl_dhs)["W"]
    assert relative_error(online, exact) <= 1e-10


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_rtrl_influence_matches_finite_differences_of_state(activation):
    """G_t[b, k, i, j] = ∂h_t[b, k]/∂W_ij, checked directly for the final step."""
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=0.7, activation=activation, rng=3)
    xs = np.random.default_rng(4).standard_normal((12, 2, N_IN))
    est = kfrtrl.RTRL(cell, batch_size=2, backend="numpy")
    for x in xs:
        est.step(x)
    G = est.influence("W")

    def final_state():
        s = cell.initial_state(2)
        for x in xs:
            s, _ = cell.forward(s, x)
        return s

    eps = 1e-6
    for idx in np.ndindex(cell.W.shape):
        w0 = cell.W[idx]
        cell.W[idx] = w0 + eps
        plus = final_state()
        cell.W[idx] = w0 - eps
        minus = final_state()
        cell.W[idx] = w0
        np.testing.assert_allclose(G[:, :, idx[0], idx[1]], (plus - minus) / (2 * eps), atol=1e-8)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 4])
def test_tbptt_with_full_window_equals_bptt(batch, activation, sequence, run_online, relative_error):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=0.8, activation=activation, rng=5)
    xs, dl_dhs = sequence(30, batch, N_IN, N_HIDDEN, seed=6)
    exact = kfrtrl.bptt(cell, xs, dl_dhs)["W"]
    for truncation in (30, 45):
        est = kfrtrl.TBPTT(cell, truncation=truncation, batch_size=batch, backend="numpy")
        assert relative_error(run_online(est, xs, dl_dhs)["W"], exact) <= 1e-10


def test_tbptt_short_window_is_visibly_biased(sequence, run_online, relative_error):
    """Truncation 2 drops the long dependencies: the error is large and shrinks as T grows."""
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=1.0, rng=5)
    cell.W[:, :N_HIDDEN] *= 1.5                      # long memory, so truncation matters
    xs, dl_dhs = sequence(30, 2, N_IN, N_HIDDEN, seed=6)
    exact = kfrtrl.bptt(cell, xs, dl_dhs)["W"]
    errors = []
    for truncation in (1, 2, 5, 30):
        est = kfrtrl.TBPTT(cell, truncation=truncation, batch_size=2, backend="numpy")
        errors.append(relative_error(run_online(est, xs, dl_dhs)["W"], exact))
    print(f"\nTBPTT relative error, truncation 1, 2, 5, 30: {errors}")
    assert errors[1] > 0.1
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] <= 1e-10


@pytest.mark.parametrize("make", [
    lambda cell, B: kfrtrl.RTRL(cell, batch_size=B, backend="numpy"),
    lambda cell, B: kfrtrl.TBPTT(cell, truncation=100, batch_size=B, backend="numpy"),
], ids=["rtrl", "tbptt"])
def test_partial_reset_cuts_history(make, sequence, relative_error):
    """After reset(mask), reset samples learn as if started from zero; the others keep their history."""
    B, T1, T2 = 4, 9, 14
    mask = np.array([True, False, True, False])
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=0.6, rng=7)
    xs, dl_dhs = sequence(T1 + T2, B, N_IN, N_HIDDEN, seed=8)
    est = make(cell, B)
    pre = 0.0
    for t in range(T1):
        est.step(xs[t])
        pre = pre + est.gradient(dl_dhs[t])["W"]
    est.reset(mask)
    assert np.all(est.state[mask] == 0.0)
    post = 0.0
    for t in range(T1, T1 + T2):
        est.step(xs[t])
        post = post + est.gradient(dl_dhs[t])["W"]
    assert relative_error(pre, kfrtrl.bptt(cell, xs[:T1], dl_dhs[:T1])["W"]) <= 1e-10
    fresh = kfrtrl.bptt(cell, xs[T1:, mask], dl_dhs[T1:, mask])["W"]
    kept_dl = dl_dhs[:, ~mask].copy()
    kept_dl[:T1] = 0.0                               # only the post-reset losses, full history
    kept = kfrtrl.bptt(cell, xs[:, ~mask], kept_dl)["W"]
    assert relative_error(post, fresh + kept) <= 1e-10
    # the cut is real: back-propagating the reset samples through the old history differs
    uncut_dl = dl_dhs[:, mask].copy()
    uncut_dl[:T1] = 0.0
    assert relative_error(post, kfrtrl.bptt(cell, xs[:, mask], uncut_dl)["W"] + kept) > 1e-2


def test_full_reset_restarts_from_zero(sequence, run_online, relative_error):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=0.9, rng=9)
    xs, dl_dhs = sequence(20, 2, N_IN, N_HIDDEN, seed=10)
    for est in (kfrtrl.RTRL(cell, batch_size=2, backend="numpy"),
                kfrtrl.TBPTT(cell, truncation=50, batch_size=2, backend="numpy")):
        run_online(est, xs[:7], dl_dhs[:7])
        est.reset()
        with pytest.raises(RuntimeError, match="gradient"):
            est.gradient(dl_dhs[0])
        after = run_online(est, xs[7:], dl_dhs[7:])["W"]
        assert relative_error(after, kfrtrl.bptt(cell, xs[7:], dl_dhs[7:])["W"]) <= 1e-10


def _twin_cells(alpha, rng):
    """A float32 cell and a float64 cell holding exactly the same (float32-representable) weights."""
    c32 = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=alpha, dtype=np.float32, rng=rng)
    c64 = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=alpha, dtype=np.float64, rng=rng)
    c64.W[...] = c32.W
    return c32, c64


def test_float32_rtrl_and_bptt_match_float64(sequence, run_online, relative_error):
    c32, c64 = _twin_cells(0.7, 12)
    xs32, dl32 = sequence(30, 3, N_IN, N_HIDDEN, seed=13, dtype=np.float32)
    xs64, dl64 = xs32.astype(np.float64), dl32.astype(np.float64)
    exact = kfrtrl.bptt(c64, xs64, dl64)["W"]
    online32 = run_online(kfrtrl.RTRL(c32, batch_size=3, backend="numpy"), xs32, dl32)["W"]
    bptt32 = kfrtrl.bptt(c32, xs32, dl32)["W"]
    assert online32.dtype == np.float32 and bptt32.dtype == np.float32
    assert relative_error(online32.astype(np.float64), exact) <= 1e-4
    assert relative_error(bptt32.astype(np.float64), exact) <= 1e-4


@pytest.mark.parametrize("make, kronecker", [
    (lambda cell: kfrtrl.KFRTRL(cell, batch_size=3, rng=21, backend="numpy"), True),
    (lambda cell: kfrtrl.KFRTRL(cell, batch_size=3, rng=21, backend="numpy", n_chains=2), True),
    (lambda cell: kfrtrl.OK(cell, rank=2, batch_size=3, rng=21, backend="numpy"), True),
    (lambda cell: kfrtrl.OK(cell, rank=3, batch_size=3, rng=21, backend="numpy"), True),
    (lambda cell: kfrtrl.UORO(cell, batch_size=3, rng=21, backend="numpy"), False),
    (lambda cell: kfrtrl.NoBackTrack(cell, batch_size=3, rng=21, backend="numpy"), False),
], ids=["kf", "kf2", "ok2", "ok3", "uoro", "nobacktrack"])
def test_float32_estimators_follow_float64_twin(make, kronecker, sequence, relative_error):
    """Same seed, same signs: the float32 run tracks the float64 run to float32 accuracy
    (the influence too, for the Kronecker-sum estimators, which expose it)."""
    c32, c64 = _twin_cells(0.8, 14)
    xs32, dl32 = sequence(6, 3, N_IN, N_HIDDEN, seed=15, dtype=np.float32)
    e32, e64 = make(c32), make(c64)
    for x, dl in zip(xs32, dl32):
        e32.step(x)
        e64.step(x.astype(np.float64))
        if kronecker:
            G32, G64 = e32.influence("W"), e64.influence("W")
            assert G32.dtype == np.float32
            np.testing.assert_allclose(G32, G64, rtol=1e-4, atol=1e-4 * np.abs(G64).max())
        g32 = e32.gradient(dl)["W"]
        assert g32.dtype == np.float32
        assert relative_error(g32.astype(np.float64), e64.gradient(dl.astype(np.float64))["W"]) <= 1e-4


def test_diagonal_step_is_detected_for_the_elman_cell_and_the_rhn_of_depth_1():
    x = np.ones((2, N_IN))
    for cell, blocks in [(kfrtrl.Elman(N_IN, N_HIDDEN, rng=0), 1), (kfrtrl.RHN(N_IN, N_HIDDEN, rng=0), 2),
                         (kfrtrl.RHN(N_IN, N_HIDDEN, depth=2, rng=0), None),
                         (kfrtrl.LSTM(N_IN, N_HIDDEN, rng=0), None), (kfrtrl.GRU(N_IN, N_HIDDEN, rng=0), None)]:
        _, cache = cell.forward(cell.initial_state(2), x)
        found = cell.diagonal_step(cache)
        assert (found is not None) == (blocks is not None)
        if blocks:
            name, lam, dz, a = found
            layer = cache[0]
            assert name == "W" and a is layer.a and lam.shape == (2, N_HIDDEN) and dz.shape == (2, blocks, N_HIDDEN)
            np.testing.assert_array_equal(dz, layer.dz[:, 0])


FUSED_CELLS = {"elman": lambda dtype: kfrtrl.Elman(N_IN, N_HIDDEN, alpha=0.7, dtype=dtype, rng=6),
               "rhn": lambda dtype: kfrtrl.RHN(N_IN, N_HIDDEN, dtype=dtype, rng=6)}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell_name", FUSED_CELLS)
@pytest.mark.parametrize("backend", kfrtrl.available_backends())
@pytest.mark.parametrize("make", [
    lambda cell, **kw: kfrtrl.KFRTRL(cell, n_chains=2, rng=5, **kw),
    lambda cell, **kw: kfrtrl.OK(cell, rank=3, rng=5, **kw),
    lambda cell, **kw: kfrtrl.UORO(cell, rng=5, **kw),
], ids=["kf2", "ok3", "uoro"])
def test_fused_step_equals_the_layer_by_layer_step(make, backend, cell_name, dtype, batch, sequence, monkeypatch,
                                                   relative_error):
    """The fused kernels (kf_fused, ok_fused, uoro_fused) and the general path give the same estimates,
    for the Elman cell and the RHN of depth 1 (two diagonal blocks), with a reset midway."""
    cell = FUSED_CELLS[cell_name](dtype)
    xs, dl_dhs = sequence(10, batch, N_IN, N_HIDDEN, seed=7)

    def run():
        est, grads = make(cell, batch_size=batch, backend=backend, n_threads=2), []
        for t, (x, dl) in enumerate(zip(xs, dl_dhs)):
            if t == 5:
                est.reset(np.arange(batch) % 2 == 0)
            est.step(x.astype(dtype))
            grads.append(est.gradient(dl.astype(dtype))["W"])
        return np.array(grads)

    fused = run()
    diagonal_step = kfrtrl.cells.Cell.diagonal_step
    monkeypatch.setattr(kfrtrl.cells.Cell, "diagonal_step", lambda self, cache: None)
    general = run()
    tol = {np.float64: 1e-12 if backend == "numpy" else 1e-10, np.float32: 1e-4}[dtype]
    assert relative_error(fused, general) <= tol
    # fused for the first three steps, then the general path (OK recombines its deferred factors)
    steps = itertools.count()
    monkeypatch.setattr(kfrtrl.cells.Cell, "diagonal_step",
                        lambda self, cache: diagonal_step(self, cache) if next(steps) < 3 else None)
    assert relative_error(run(), general) <= tol
