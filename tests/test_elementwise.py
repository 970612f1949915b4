"""The element-wise family: ELSTM and LRU cells, exact element-wise RTRL (every backend), stacks.

Exact element-wise RTRL must equal bptt and dense RTRL to 1e-10 (float64),
bptt must equal central finite differences, the compiled kernels must equal
the reference; sizes are odd and small (n_in = 3, n = 5) so every check is fast.
"""

import numpy as np
import pytest

import kfrtrl
from kfrtrl._reference import elementwise as ref
from _helpers import kernel_module, rel_max, sequence_loss

N_IN, N = 3, 5
BACKENDS = kfrtrl.available_backends()
TOL = {np.float64: 1e-10, np.float32: 1e-4}

CELLS = {
    "elstm": lambda n_in=N_IN, n=N, **kw: kfrtrl.ELSTM(n_in, n, **kw),
    "lru": lambda n_in=N_IN, n=N, **kw: kfrtrl.LRU(n_in, n, r_min=0.5, r_max=0.95, **kw),
}


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _elstm_step(p, s, x):
    """The documented ELSTM equations, written out independently of the cell."""
    n = s.shape[1] // 2
    c = s[:, :n]
    W, w, Wo = p["W"], p["w"][:, 0], p["Wo"]
    z = np.tanh(x @ W[:n, :-1].T + W[:n, -1] + w[:n] * c)
    f = _sig(x @ W[n:, :-1].T + W[n:, -1] + w[n:] * c)
    c_new = f * c + (1 - f) * z
    o = _sig(c_new @ Wo[:, :n].T + x @ Wo[:, n:-1].T + Wo[:, -1])
    return np.concatenate([c_new, o * c_new], axis=1)


def _lru_step(p, s, x):
    n = s.shape[1] // 2
    lam = np.exp(-np.exp(p["nu"][:, 0]))
    r = lam * s[:, :n] + x @ p["B"].T
    C = p["C"]
    return np.concatenate([r, np.tanh(r @ C[:, :n].T + x @ C[:, n:-1].T + C[:, -1])], axis=1)


def _run(est, xs, dls, resets=()):
    """Σ_t gradient_t, with est.reset(mask) before the steps in ``resets`` ({t: mask or None})."""
    total = None
    for t, (x, dl) in enumerate(zip(xs, dls)):
        if t in resets:
            est.reset(resets[t])
        est.step(x)
        g = est.gradient(dl)
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return total


@pytest.mark.parametrize("name", CELLS)
def test_forward_matches_the_written_equations(name):
    cell = CELLS[name](rng=0)
    gen = np.random.default_rng(1)
    s, x = 0.5 * gen.standard_normal((4, 2 * N)), gen.standard_normal((4, N_IN))
    step = _elstm_step if name == "elstm" else _lru_step
    np.testing.assert_allclose(cell.forward(s, x)[0], step(cell.params(), s, x), rtol=1e-13, atol=1e-14)


def test_lru_lambda_stays_in_the_unit_interval():
    cell = kfrtrl.LRU(2, 7, rng=0)
    lam = np.exp(-np.exp(cell.nu[:, 0]))
    assert np.all((lam >= 0.9) & (lam <= 0.999))
    for nu, strict in ((-10.0, True), (0.0, True), (3.0, True), (-50.0, False), (50.0, False)):
        cell.nu[...] = nu                              # in floating point λ may round to 0 or 1
        s, _ = cell.forward(np.ones((1, 14)), np.zeros((1, 2)))
        lam = s[0, :7]
        assert np.all((lam > 0.0) & (lam < 1.0)) if strict else np.all((lam >= 0.0) & (lam <= 1.0))


@pytest.mark.parametrize("name", CELLS)
def test_bptt_equals_central_finite_differences(name, sequence):
    cell = CELLS[name](rng=2)
    xs, dls = sequence(6, 2, N_IN, N, seed=3)
    g = kfrtrl.bptt(cell, xs, dls)
    eps = 1e-6
    for pname, P in cell.params().items():
        fd = np.zeros_like(P)
        for idx in np.ndindex(P.shape):
            old = P[idx]
            P[idx] = old + eps
            up = sequence_loss(cell, xs, dls)
            P[idx] = old - eps
            fd[idx] = (up - sequence_loss(cell, xs, dls)) / (2 * eps)
            P[idx] = old
        assert rel_max(g[pname], fd) < 1e-7, pname


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CELLS)
def test_elementwise_rtrl_equals_bptt_and_dense_rtrl(name, backend, batch, sequence):
    """Summed online gradients without resets equal bptt; step by step they equal dense RTRL, resets included."""
    cell = CELLS[name](rng=4)
    xs, dls = sequence(9, batch, N_IN, N, seed=5)
    est = kfrtrl.RTRL(cell, batch_size=batch, backend=backend)
    assert est.elementwise
    g, ref_g = _run(est, xs, dls), kfrtrl.bptt(cell, xs, dls)
    for k in ref_g:
        assert rel_max(g[k], ref_g[k]) < 1e-10, k
    resets = {3: None, 6: np.arange(batch) % 2 == 0}
    ests = [kfrtrl.RTRL(cell, batch_size=batch, backend=backend, elementwise=flag) for flag in (True, False)]
    for t, (x, dl) in enumerate(zip(xs, dls)):
        for e in ests:
            if t in resets:
                e.reset(resets[t])
            e.step(x)
        ge, gd = (e.gradient(dl) for e in ests)
        for k in gd:
            assert rel_max(ge[k], gd[k]) < 1e-10, (t, k)


@pytest.mark.parametrize("name", CELLS)
def test_elementwise_influence_is_the_nonzero_part_of_the_dense_one(name, sequence):
    cell = CELLS[name](rng=6)
    xs, _ = sequence(5, 2, N_IN, N, seed=7)
    ew, dense = (kfrtrl.RTRL(cell, batch_size=2, backend="numpy", elementwise=f) for f in (True, False))
    for x in xs:
        ew.step(x)
        dense.step(x)
    for pname in cell.recurrent_names():
        E = ew.influence(pname)                       # (B, Z, n, m)
        G = dense.influence(pname)[:, :N]             # (B, n, p, m): influence on the recurrent state
        B, Z, n, m = E.shape
        expected = np.zeros_like(G)
        for z in range(Z):
            expected[:, np.arange(n), z * n + np.arange(n)] = E[:, z]
        assert rel_max(G, expected) < 1e-12, pname


@pytest.mark.parametrize("est_name", ["uoro", "kf", "ok", "nobacktrack", "tbptt"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CELLS)
def test_every_estimator_runs_and_matches_numpy(name, backend, est_name, sequence):
    make = {"uoro": kfrtrl.UORO, "kf": kfrtrl.KFRTRL, "nobacktrack": kfrtrl.NoBackTrack,
            "ok": lambda c, **kw: kfrtrl.OK(c, rank=2, **kw),
            "tbptt": lambda c, **kw: kfrtrl.TBPTT(c, truncation=3, **kw)}[est_name]
    cell = CELLS[name](rng=8)
    xs, dls = sequence(6, 3, N_IN, N, seed=9)
    g, g_ref = (_run(make(cell, batch_size=3, rng=1, backend=b), xs, dls, {3: np.array([True, False, True])})
                for b in (backend, "numpy"))
    assert g.keys() == cell.params().keys()
    for k in g:
        assert g[k].shape == cell.params()[k].shape
        assert rel_max(g[k], g_ref[k]) < 1e-10, k


def test_tbptt_with_a_long_window_equals_bptt(sequence):
    cell = kfrtrl.ELSTM(N_IN, N, rng=10)
    xs, dls = sequence(7, 2, N_IN, N, seed=11)
    g, ref_g = _run(kfrtrl.TBPTT(cell, truncation=7, batch_size=2), xs, dls), kfrtrl.bptt(cell, xs, dls)
    for k in ref_g:
        assert rel_max(g[k], ref_g[k]) < 1e-12, k


@pytest.mark.parametrize("name", CELLS)
def test_float32_follows_float64(name, sequence):
    cells = [CELLS[name](rng=12, dtype=dt) for dt in (np.float64, np.float32)]
    xs, dls = sequence(6, 2, N_IN, N, seed=13)
    g64 = _run(kfrtrl.RTRL(cells[0], batch_size=2), xs, dls)
    g32 = _run(kfrtrl.RTRL(cells[1], batch_size=2), xs.astype(np.float32), dls.astype(np.float32))
    for k in g64:
        assert g32[k].dtype == np.float32
        assert rel_max(g32[k], g64[k]) < 1e-4, k


# ---- kernels ----


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B,Z,n,m", [(1, 2, 5, 4), (3, 1, 7, 1), (2, 2, 300, 130)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_match_the_reference(backend, B, Z, n, m, dtype):
    """ew_propagate and ew_gradient against the reference (the last size runs in parallel)."""
    gen = np.random.default_rng(14)
    E = gen.standard_normal((B, Z, n, m)).astype(dtype)
    lam = gen.uniform(0, 1, (B, 2, n)).astype(dtype)[:, 0]          # a strided view
    dz, a, c = (gen.standard_normal(s).astype(dtype) for s in ((B, Z, n), (B, m), (B, n)))
    ops = kernel_module(backend)
    got, want = E.copy(), E.copy()
    ops.ew_propagate(got, lam, dz, a, 2)
    ref.ew_propagate(want, lam, dz, a, 2)
    assert rel_max(got, want) <= TOL[dtype]
    out, expected = (np.full((Z, n, m), np.nan, dtype=dtype) for _ in range(2))
    ops.ew_gradient(E, c, out, 2)
    ref.ew_gradient(E, c, expected, 2)
    assert rel_max(out, expected) <= TOL[dtype]


def test_reference_kernel_formula():
    E = np.arange(12.0).reshape(1, 2, 3, 2)
    lam, dz, a = np.array([[0.5, 2.0, -1.0]]), np.array([[[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]]), np.array([[1.0, -1.0]])
    want = E * lam[:, None, :, None] + dz[..., None] * a[:, None, None, :]
    ref.ew_propagate(E, lam, dz, a, 1)
    np.testing.assert_array_equal(E, want)
    assert E[0, 0, 1, 0] == 2.0 * 2.0 + 0.0 and E[0, 1, 1, 1] == 2.0 * 9.0 - 3.0


# ---- stacks ----


def _stack(sizes, dtype=np.float64):
    kinds = ["elstm", "lru", "elstm"]
    return kfrtrl.Stack([CELLS[kinds[i]](n_in=sizes[i], n=sizes[i + 1], rng=20 + i, dtype=dtype)
                         for i in range(len(sizes) - 1)])


def test_stack_bptt_equals_finite_differences(sequence):
    stack = _stack([N_IN, 4, 3])
    xs, dls = sequence(5, 2, N_IN, 3, seed=15)
    g = kfrtrl.bptt(stack, xs, dls)
    assert set(g) == {"0.W", "0.w", "0.Wo", "1.B", "1.nu", "1.C"}
    for pname, P in stack.params().items():
        fd = np.zeros_like(P)
        for idx in np.ndindex(P.shape):
            old = P[idx]
            P[idx] = old + 1e-6
            up = sequence_loss(stack, xs, dls)
            P[idx] = old - 1e-6
            fd[idx] = (up - sequence_loss(stack, xs, dls)) / 2e-6
            P[idx] = old
        assert rel_max(g[pname], fd) < 1e-7, pname


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_layer_stack_is_exact(backend, sequence):
    stack = _stack([N_IN, N])
    xs, dls = sequence(8, 3, N_IN, N, seed=16)
    g, ref_g = _run(kfrtrl.RTRL(stack, batch_size=3, backend=backend), xs, dls), kfrtrl.bptt(stack, xs, dls)
    for k in ref_g:
        assert rel_max(g[k], ref_g[k]) < 1e-10, k


@pytest.mark.parametrize("backend", BACKENDS)
def test_stack_rtrl_equals_spatial_backprop(backend, sequence):
    """Three layers: the top layer exact; the whole gradient equals TBPTT(1) except in the top layer's
    recurrent parameters, where it equals bptt's (the definition of spatial-only backpropagation
    between layers with exact RTRL inside each)."""
    stack = _stack([N_IN, 4, 5, 3])
    xs, dls = sequence(8, 2, N_IN, 3, seed=17)
    g = _run(kfrtrl.RTRL(stack, batch_size=2, backend=backend), xs, dls)
    exact = kfrtrl.bptt(stack, xs, dls)
    for k in ("2.W", "2.w", "2.Wo"):
        assert rel_max(g[k], exact[k]) < 1e-10, k
    # a lower layer's readout sees only the step's spatial path: TBPTT(1) gives it exactly
    t1 = _run(kfrtrl.TBPTT(stack, truncation=1, batch_size=2), xs, dls)
    for k in ("0.Wo", "1.C"):
        assert rel_max(g[k], t1[k]) < 1e-10, k
    assert rel_max(g["0.W"], exact["0.W"]) > 1e-6        # and the lower layers are approximate


def test_stack_sizes_and_names():
    stack = _stack([N_IN, 4, 3])
    assert (stack.n_in, stack.n_hidden, stack.n_state) == (N_IN, 3, 14)
    assert stack.params()["1.C"] is stack.cells[1].C
    s, _ = stack.forward(stack.initial_state(2), np.ones((2, N_IN)))
    assert s[:, stack.out].shape == (2, 3)


# ---- bad input ----


def test_dense_cell_on_an_elementwise_path():
    with pytest.raises(TypeError, match="cell: elementwise RTRL needs an element-wise cell.*got Elman"):
        kfrtrl.RTRL(kfrtrl.Elman(2, 3), elementwise=True)
    with pytest.raises(TypeError, match=r"cells\[1\]: expected an element-wise cell.*got LSTM"):
        kfrtrl.Stack([kfrtrl.ELSTM(2, 3), kfrtrl.LSTM(3, 3)])
    with pytest.raises(TypeError, match="elementwise: expected None, True or False"):
        kfrtrl.RTRL(kfrtrl.ELSTM(2, 3), elementwise="yes")


def test_stack_errors():
    with pytest.raises(ValueError, match=r"cells\[1\]: expected n_in = 4 \(n_hidden of cells\[0\]\), got 5"):
        kfrtrl.Stack([kfrtrl.ELSTM(2, 4), kfrtrl.LRU(5, 3)])
    with pytest.raises(TypeError, match=r"cells\[1\]: expected dtype float64"):
        kfrtrl.Stack([kfrtrl.ELSTM(2, 4), kfrtrl.LRU(4, 3, dtype=np.float32)])
    with pytest.raises(TypeError, match="cells: expected a non-empty list"):
        kfrtrl.Stack([])
    stack = _stack([N_IN, 4, 3])
    with pytest.raises(TypeError, match=r"cell: a Stack supports the estimators \['rtrl', 'tbptt'\], not 'ok'"):
        kfrtrl.OK(stack)
    with pytest.raises(ValueError, match="elementwise: a Stack has only the element-wise RTRL"):
        kfrtrl.RTRL(stack, elementwise=False)


def test_cell_argument_errors():
    with pytest.raises(TypeError, match="n_hidden: expected an integer >= 1"):
        kfrtrl.ELSTM(2, 2.5)
    with pytest.raises(ValueError, match=r"r_max: expected a real number in \[0.95"):
        kfrtrl.LRU(2, 3, r_min=0.95, r_max=0.9)


def test_gradient_deviation_is_zero_for_one_layer_and_not_for_two(sequence):
    from kfrtrl.cells.stack import gradient_deviation

    xs, dls = sequence(6, 2, N_IN, 3, seed=18)
    one = gradient_deviation(_stack([N_IN, 3]), xs, dls, backend="numpy")
    assert one["all"][0] == pytest.approx(1.0, abs=1e-12) and one["all"][1] < 1e-10
    two = gradient_deviation(_stack([N_IN, 4, 3]), xs, dls, backend="numpy")
    assert two["1"][1] < 1e-10 and two["0"][1] > 1e-6 and two["all"][0] < 1.0
    assert set(two) == {"all", "0", "1"}


def test_stack_lower_layer_is_bptt_of_its_spatial_signal(sequence):
    """Two layers: the bottom layer's RTRL gradient equals bptt of the bottom cell alone, driven by
    the loss signal the top layer passes down within each step (its ∂L_t/∂x_t, no temporal path)."""
    stack = _stack([N_IN, 4, 3])
    bottom, top = stack.cells
    xs, dls = sequence(7, 2, N_IN, 3, seed=19)
    g = _run(kfrtrl.RTRL(stack, batch_size=2, backend="numpy"), xs, dls)
    s, passed = stack.initial_state(2), []
    for x, dl in zip(xs, dls):
        s, cache = stack.forward(s, x)
        c = np.zeros((2, top.n_state))
        c[:, top.out] = dl
        passed.append(top.input_cotangent(top.backward(cache[1], c)[1]))
    exact_bottom = kfrtrl.bptt(bottom, xs, np.array(passed))
    for k in exact_bottom:
        assert rel_max(g["0." + k], exact_bottom[k]) < 1e-10, k
