"""SnAp-1 and RFLO against their definitions: exact RTRL where the step Jacobian is unit-diagonal,
a masked dense RTRL elsewhere, Murray's trace for RFLO, and every backend against the reference."""
import importlib

import numpy as np
import pytest

import kfrtrl
from kfrtrl import backends
from kfrtrl._reference import snap as ref
from kfrtrl.cells._base import _dense_blocks
from kfrtrl.estimators.rflo import random_feedback
from _helpers import COMPILED, rel_max

N_IN = 2
TOL = {np.float64: 1e-10, np.float32: 1e-4}

CELLS = {
    "elman": lambda n, rng: kfrtrl.Elman(N_IN, n, alpha=0.7, rng=rng),
    "lstm": lambda n, rng: kfrtrl.LSTM(N_IN, n, rng=rng),
    "rhn": lambda n, rng: kfrtrl.RHN(N_IN, n, rng=rng),
    "rhn3": lambda n, rng: kfrtrl.RHN(N_IN, n, depth=3, rng=rng),
    "gru": lambda n, rng: kfrtrl.GRU(N_IN, n, rng=rng),
}


def _diagonalise(cell):
    """Zero every recurrent weight that reads another unit: the step Jacobian becomes unit-diagonal."""
    n = cell.n_hidden
    for W in cell.params().values():
        rec = W[:, :n].reshape(-1, n, n)                # (Z, n, n) blocks of the unit-reading columns
        rec *= np.eye(n)


def _run(est, xs, dl_dhs, reset_at=()):
    """Σ_t gradient_t, with a full reset before the steps in ``reset_at``."""
    total = None
    for t, (x, dl) in enumerate(zip(xs, dl_dhs)):
        if t in reset_at:
            est.reset()
        est.step(x)
        g = est.gradient(dl)
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return total


def _masked_rtrl(cell, xs, dl_dhs):
    """Dense RTRL with the influence masked to each weight row's own unit after every layer.

    -> (Σ_t gradient_t, final dense influences {name: (B, N, p, m)}). Per layer l, the
    tangents are pushed through J_l (the cell's own layer jvp, numpy kernels) and every
    entry outside the row's unit is zeroed; the immediate term is D_l pushed through the
    later layers the same way. For one-layer cells that is Menick et al.'s masked RTRL.
    """
    ops = importlib.import_module("kfrtrl._reference")
    n, B = cell.n_hidden, xs.shape[1]
    shapes = cell.param_shapes()
    G = {k: np.zeros((B, p * m, cell.n_state)) for k, (p, m) in shapes.items()}
    total = {k: np.zeros(shape) for k, shape in shapes.items()}
    s = cell.initial_state(B)

    def mask(V, m):                                     # V (B, p*m, width): keep unit i mod n of row i
        unit = np.arange(V.shape[1]) // m % n
        return V * (unit[:, None] == np.arange(V.shape[2])[None, :] % n)

    for x, dl in zip(xs, dl_dhs):
        s, cache = cell.forward(s, x)
        for k, (p, m) in shapes.items():
            V = G[k]
            for layer in cache:
                V = mask(cell._layer_jvp(layer, V, ops, 1), m)
            idx = [layer.name for layer in cache].index(k)
            layer = cache[idx]
            Dt = _dense_blocks(layer.dz)                # (B, p, S n)
            for later in cache[idx + 1:]:
                Dt = mask(cell._layer_jvp(later, Dt, ops, 1), 1)
            F = Dt[:, :, None, :] * layer.a[:, None, :, None]
            G[k] = V + F.reshape(B, p * m, -1)
            c = np.zeros((B, cell.n_state))
            c[:, cell.out] = dl
            total[k] += np.einsum("brn,bn->r", G[k], c).reshape(p, m)
    dense = {k: np.moveaxis(G[k], 2, 1).reshape(B, cell.n_state, p, m) for k, (p, m) in shapes.items()}
    return total, dense


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", list(CELLS))
def test_snap1_is_exact_rtrl_when_recurrence_is_unit_diagonal(kind, batch, sequence):
    """Diagonal recurrent weights: SnAp-1's influence and gradients equal exact RTRL's and BPTT's."""
    n = 3
    cell = CELLS[kind](n, 2)
    _diagonalise(cell)
    xs, dl_dhs = sequence(7, batch, N_IN, n, seed=4)
    snap = kfrtrl.SnAp1(cell, batch_size=batch, backend="numpy")
    rtrl = kfrtrl.RTRL(cell, batch_size=batch, backend="numpy")
    g_snap, g_rtrl = _run(snap, xs, dl_dhs), _run(rtrl, xs, dl_dhs)
    exact = kfrtrl.bptt(cell, xs, dl_dhs)
    for k in exact:
        assert rel_max(g_snap[k], exact[k]) < 1e-12, k
        assert rel_max(g_snap[k], g_rtrl[k]) < 1e-12, k
        assert rel_max(snap.influence(k), rtrl.influence(k)) < 1e-12, k


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", list(CELLS))
def test_snap1_equals_masked_dense_rtrl_and_is_biased(kind, batch, sequence):
    """Dense cells: SnAp-1 is the masked dense RTRL (influence and gradient), visibly not BPTT."""
    n = 4
    cell = CELLS[kind](n, 3)
    xs, dl_dhs = sequence(8, batch, N_IN, n, seed=5)
    snap = kfrtrl.SnAp1(cell, batch_size=batch, backend="numpy")
    g_snap = _run(snap, xs, dl_dhs)
    g_mask, G_mask = _masked_rtrl(cell, xs, dl_dhs)
    exact = kfrtrl.bptt(cell, xs, dl_dhs)
    for k in exact:
        assert rel_max(g_snap[k], g_mask[k]) < 1e-12, k
        assert rel_max(snap.influence(k), G_mask[k]) < 1e-12, k
    err = max(rel_max(g_snap[k], exact[k]) for k in exact)
    assert err > 1e-2


def test_snap1_reset_restarts_from_zero(sequence):
    """A full reset clears the influence: the gradient after it is that of a fresh estimator."""
    cell = kfrtrl.LSTM(N_IN, 3, rng=1)
    xs, dl_dhs = sequence(6, 2, N_IN, 3, seed=6)
    est = kfrtrl.SnAp1(cell, batch_size=2, backend="numpy")
    _run(est, xs, dl_dhs)
    est.reset()
    fresh = kfrtrl.SnAp1(cell, batch_size=2, backend="numpy")
    for k, g in _run(est, xs, dl_dhs).items():
        assert rel_max(g, _run(fresh, xs, dl_dhs)[k]) == 0.0


def _murray(cell, xs, dl_dhs):
    """RFLO written out from Murray (2019): P ← (1 − α) P + α f'(u) ⊗ [h; x; 1], gradient c P."""
    alpha, W = cell.alpha, cell.W
    B, n = xs.shape[1], cell.n_hidden
    h = np.zeros((B, n))
    P = np.zeros((B,) + W.shape)
    total = np.zeros(W.shape)
    for x, c in zip(xs, dl_dhs):
        a = np.concatenate([h, x, np.ones((B, 1))], axis=1)
        u = a @ W.T
        P = (1 - alpha) * P + alpha * (1 - np.tanh(u) ** 2)[:, :, None] * a[:, None, :]
        h = (1 - alpha) * h + alpha * np.tanh(u)
        total += np.einsum("bi,bij->ij", c, P)
    return total


@pytest.mark.parametrize("alpha", [0.3, 1.0])
@pytest.mark.parametrize("batch", [1, 3])
def test_rflo_is_murrays_trace(alpha, batch, sequence):
    cell = kfrtrl.Elman(N_IN, 5, alpha=alpha, rng=2)
    xs, dl_dhs = sequence(9, batch, N_IN, 5, seed=7)
    g = _run(kfrtrl.RFLO(cell, batch_size=batch, backend="numpy"), xs, dl_dhs)["W"]
    assert rel_max(g, _murray(cell, xs, dl_dhs)) < 1e-12


def test_rflo_random_feedback_is_a_loss_signal(sequence):
    """Murray's random feedback needs no estimator change: dl_dh = err @ B gives Σ_i (Bε)_i P_ij."""
    cell = kfrtrl.Elman(N_IN, 4, alpha=0.5, rng=2)
    xs, errs = sequence(5, 2, N_IN, 3, seed=8)
    B = random_feedback(3, 4, rng=9)
    assert B.shape == (3, 4) and np.array_equal(B, random_feedback(3, 4, rng=9))
    g = _run(kfrtrl.RFLO(cell, batch_size=2, backend="numpy"), xs, errs @ B)["W"]
    assert rel_max(g, _murray(cell, xs, errs @ B)) < 1e-12


@pytest.mark.parametrize("make", [lambda: kfrtrl.LSTM(N_IN, 3), lambda: kfrtrl.RHN(N_IN, 3), lambda: kfrtrl.GRU(N_IN, 3),
                                  lambda: kfrtrl.ELSTM(N_IN, 3), lambda: kfrtrl.LRU(N_IN, 3)])
def test_rflo_rejects_other_cells(make):
    with pytest.raises(TypeError, match="rflo supports the leaky Elman cell"):
        kfrtrl.RFLO(make())


def test_snap1_rejects_a_layer_reading_part_of_a_block():
    cell = kfrtrl.Elman(N_IN, 4, rng=0)
    est = kfrtrl.SnAp1(cell, backend="numpy")
    s, cache = cell.forward(cell.initial_state(1), np.zeros((1, N_IN)))
    cache[0].rec = slice(0, 3)
    with pytest.raises(ValueError, match="whole blocks of 4 units"):
        est._propagate(cache)


# ---- backends ----


BACKEND_CASES = [(kfrtrl.SnAp1, "elman"), (kfrtrl.SnAp1, "lstm"), (kfrtrl.SnAp1, "gru"), (kfrtrl.RFLO, "elman")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("make, kind", BACKEND_CASES)
@pytest.mark.parametrize("backend", COMPILED)
def test_estimator_matches_numpy(backend, make, kind, batch, dtype, sequence):
    """Same gradients as backend="numpy" over 8 steps with a full and a masked reset."""
    n = 5
    cell = {"elman": kfrtrl.Elman(N_IN, n, alpha=0.7, dtype=dtype, rng=3),
            "lstm": kfrtrl.LSTM(N_IN, n, dtype=dtype, rng=3),
            "gru": kfrtrl.GRU(N_IN, n, dtype=dtype, rng=3)}[kind]
    xs, dl_dhs = sequence(8, batch, N_IN, n, seed=4, dtype=dtype)
    ests = [make(cell, batch_size=batch, backend=b, n_threads=2) for b in ("numpy", backend)]
    for t, (x, dl) in enumerate(zip(xs, dl_dhs)):
        if t == 3:
            for est in ests:
                est.reset()
        if t == 5:
            for est in ests:
                est.reset(np.arange(batch) % 2 == 0)
        for est in ests:
            est.step(x)
        g_ref, g = (est.gradient(dl) for est in ests)
        for k in g_ref:
            assert g[k].dtype == dtype
            assert rel_max(g[k], g_ref[k]) <= TOL[dtype], (t, k)


def _kernel_inputs(B, p, m, S, n, dtype, seed):
    gen = np.random.default_rng(seed)
    G = gen.standard_normal((B, p, m, S)).astype(dtype)
    T = gen.standard_normal((B, n, S, S)).astype(dtype)
    D = gen.standard_normal((B, p, S)).astype(dtype)
    a = gen.standard_normal((B, m)).astype(dtype)
    c = gen.standard_normal((B, n, S)).astype(dtype)
    return G, T, D, a, c


# (B, p, m, S, n): odd sizes; one large enough for the parallel path (>= 2**16 elements)
SIZES = [(1, 3, 5, 1, 3), (3, 10, 7, 2, 5), (2, 12, 9, 3, 3), (4, 130, 131, 1, 65), (2, 96, 97, 2, 24)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("backend", COMPILED)
def test_kernels_match_reference(backend, size, n_threads, dtype):
    ops = importlib.import_module(backends._MODULES[backend])
    G, T, D, a, c = _kernel_inputs(*size, dtype, seed=sum(size))
    want = G.copy()
    ref.snap1_step(want, T, D, a, 1)
    got = G.copy()
    ops.snap1_step(got, T, D, a, n_threads)
    assert rel_max(got, want) <= TOL[dtype]
    out_ref = np.empty(G.shape[1:3], dtype=dtype)
    ref.snap1_gradient(G, c, out_ref, 1)
    out = np.full(G.shape[1:3], np.nan, dtype=dtype)
    ops.snap1_gradient(G, c, out, n_threads)
    assert rel_max(out, out_ref) <= TOL[dtype]


def test_reference_step_is_the_per_unit_product():
    """The reference kernel against its formula written entry by entry (a sign or index slip shows)."""
    G, T, D, a, _ = _kernel_inputs(2, 6, 4, 2, 3, np.float64, seed=1)
    want = np.empty_like(G)
    for b, i, j in np.ndindex(*G.shape[:3]):
        want[b, i, j] = T[b, i % 3] @ G[b, i, j] + D[b, i] * a[b, j]
    ref.snap1_step(G, T, D, a, 1)
    assert rel_max(G, want) < 1e-14


# ---- element-wise cells ----

ELEMENTWISE = {"elstm": lambda n, dtype=np.float64: kfrtrl.ELSTM(N_IN, n, dtype=dtype, rng=4),
               "lru": lambda n, dtype=np.float64: kfrtrl.LRU(N_IN, n, dtype=dtype, rng=4)}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", list(ELEMENTWISE))
def test_snap1_equals_exact_rtrl_on_elementwise_cells(kind, batch, sequence):
    """Influence, per-step gradients and their sum: SnAp-1 = element-wise exact RTRL = BPTT."""
    n = 4
    cell = ELEMENTWISE[kind](n)
    xs, dl_dhs = sequence(8, batch, N_IN, n, seed=6)
    snap = kfrtrl.SnAp1(cell, batch_size=batch, backend="numpy")
    rtrl = kfrtrl.RTRL(cell, batch_size=batch, backend="numpy")
    total = None
    for t, (x, dl) in enumerate(zip(xs, dl_dhs)):
        if t == 5:
            snap.reset(np.arange(batch) == 0)
            rtrl.reset(np.arange(batch) == 0)
        snap.step(x)
        rtrl.step(x)
        g_snap, g_rtrl = snap.gradient(dl), rtrl.gradient(dl)
        assert g_snap.keys() == g_rtrl.keys()
        for k in g_rtrl:
            assert rel_max(g_snap[k], g_rtrl[k]) < 1e-12, (t, k)
        for k in cell.recurrent_names():
            assert rel_max(snap.influence(k), rtrl.influence(k)) < 1e-12, (t, k)
        if t < 5:
            total = g_snap if total is None else {k: total[k] + g_snap[k] for k in g_snap}
    exact = kfrtrl.bptt(cell, xs[:5], dl_dhs[:5])
    for k in exact:
        assert rel_max(total[k], exact[k]) < 1e-10, k


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", list(ELEMENTWISE))
@pytest.mark.parametrize("backend", COMPILED)
def test_elementwise_matches_numpy(backend, kind, dtype, sequence):
    cell = ELEMENTWISE[kind](5, dtype)
    xs, dl_dhs = sequence(6, 3, N_IN, 5, seed=7, dtype=dtype)
    ests = [kfrtrl.SnAp1(cell, batch_size=3, backend=b, n_threads=2) for b in ("numpy", backend)]
    for x, dl in zip(xs, dl_dhs):
        for est in ests:
            est.step(x)
        g_ref, g = (est.gradient(dl) for est in ests)
        for k in g_ref:
            assert rel_max(g[k], g_ref[k]) <= TOL[dtype], k


def test_stack_is_refused():
    stack = kfrtrl.Stack([kfrtrl.ELSTM(N_IN, 3, rng=0), kfrtrl.ELSTM(3, 3, rng=1)])
    with pytest.raises(TypeError, match="snap1"):
        kfrtrl.SnAp1(stack)
