"""Property-based tests (hypothesis) of every compiled kernel against the numpy reference.

For every compiled backend and dtype, each example draws sizes, batch, a memory layout of the input arrays
(C-contiguous, Fortran order or a strided view; outputs as the kernels' contracts allow) and a reset mask (the masked samples'
factors are exactly zero, as after ``reset(mask)``); values come from a seeded Generator.
Outputs must agree with the reference to 1e-10 (float64) or 1e-4 (float32) relative.
Bounded and derandomised (the same examples on every run: CI is reproducible); raise
``KFRTRL_HYPOTHESIS_EXAMPLES`` to search further.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kfrtrl._reference as ref
from _helpers import COMPILED, kernel_module, ok_fused_step, random_signs, rel_max

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
EXAMPLES = int(os.environ.get("KFRTRL_HYPOTHESIS_EXAMPLES", "12"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LAYOUTS = ("c", "fortran", "strided")
# (S, S_in, Z) of a Jacobian layer: Elman, LSTM, RHN, GRU's first and second layer
LAYERS = [(1, 1, 1), (2, 2, 4), (1, 1, 2), (3, 1, 2), (1, 3, 1)]

pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled backend built")


def _every_backend_and_dtype(test):
    """Every compiled backend × both dtypes, each with its own bounded search."""
    dtypes = pytest.mark.parametrize("dtype", [np.dtype(np.float64), np.dtype(np.float32)], ids=str)
    return pytest.mark.parametrize("backend", COMPILED)(dtypes(test))


def _laid_out(x, layout):
    """The same values as ``x`` in the given memory layout (a view for "strided")."""
    if layout == "fortran":
        return np.asfortranarray(x)
    if layout == "strided":
        big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    return np.ascontiguousarray(x)


@st.composite
def _common(draw, max_batch=4, max_n=6):
    """(B, n, mask, gen, layout function) of one example."""
    B = draw(st.integers(1, max_batch))
    n = draw(st.integers(1, max_n))
    mask = np.array(draw(st.lists(st.booleans(), min_size=B, max_size=B)))
    gen = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    how = draw(st.sampled_from(LAYOUTS))             # one per example: bounds numba's specialisations

    def layout(x):
        return _laid_out(x, how)

    return B, n, mask, gen, layout


def _normal(gen, shape, dtype, mask=None):
    x = gen.standard_normal(shape)
    if mask is not None:
        x[mask] = 0.0                                     # a reset sample: its factors are zero
    return x.astype(dtype)


def _unwritten(x):
    """A C-contiguous array like ``x`` full of NaN: an entry a kernel forgets to write shows."""
    return np.full(x.shape, np.nan, dtype=x.dtype)


def _diagonal_step(gen, B, n, dtype, layout):
    """(W, lam, dz, a) of an Elman-type step, each in a drawn layout; m = n + 3."""
    m = n + 3
    W = gen.standard_normal((n, m)) / np.sqrt(n)
    lam, dz = gen.random((B, n)), gen.random((B, n))
    a = gen.standard_normal((B, m))
    return tuple(layout(x.astype(dtype)) for x in (W, lam, dz, a))


def _assert_all_close(got, want, dtype, what):
    """Each output of the backend (``got``) equals the reference's to the tolerance of ``dtype``."""
    for k, (x, y) in enumerate(zip(got, want)):
        assert x.dtype == y.dtype, (what, k)
        assert rel_max(x, y) <= TOL[dtype], (what, k, rel_max(x, y))


@_every_backend_and_dtype
@PROPERTY
@given(_common(), st.sampled_from(LAYERS), st.integers(1, 8), st.sampled_from(["c", "rows", "strided"]),
       st.booleans())
def test_jvp_blocks(backend, dtype, common, layer, K, out_layout, transposed_weight):
    B, n, mask, gen, layout = common
    S, S_in, Z = layer
    n_rec = n if S_in == 1 else 2 * n
    V = layout(_normal(gen, (B, K, S_in * n), dtype, mask))
    W = _normal(gen, (Z * n, n_rec + 3), dtype)
    Wt = W[:, :n_rec].T if transposed_weight else layout(np.ascontiguousarray(W[:, :n_rec].T))
    lam, dz = layout(_normal(gen, (B, S, S_in, n), dtype)), layout(_normal(gen, (B, S, Z, n), dtype))
    Vr = V if n_rec == S_in * n else V[:, :, :n_rec]     # the whole input state: the folded route
    want = np.full((B, K, S * n), np.nan, dtype=dtype)
    ref.jvp_blocks(V, Vr, Wt, lam, dz, want, 1)
    big = np.full((B, K + 1, 2 * S * n), np.nan, dtype=dtype)
    out = {"c": _unwritten(want), "rows": big[:, :K, :S * n], "strided": big[:, :K, ::2]}[out_layout]
    kernel_module(backend).jvp_blocks(V, Vr, Wt, lam, dz, out, 2)
    _assert_all_close([out], [want], dtype, "jvp_blocks")


@pytest.mark.parametrize("name", ["jvp_dense", "jvp_state"])
@_every_backend_and_dtype
@PROPERTY
@given(_common(), st.integers(1, 9), st.sampled_from(["c", "rows", "strided"]))
def test_formed_jacobian_products(name, backend, dtype, common, K, out_layout):
    """jvp_dense: out[b] = V[b] @ Ht[b], V (B, K, N); jvp_state: out[b] = Ht[b]ᵀ @ G[b], G (B, N, K)."""
    B, N, mask, gen, layout = common
    shape = (B, K, N) if name == "jvp_dense" else (B, N, K)
    X = layout(_normal(gen, shape, dtype, mask))
    Ht = layout(_normal(gen, (B, N, N), dtype))
    args = (X, Ht) if name == "jvp_dense" else (Ht, X)
    want = np.full(shape, np.nan, dtype=dtype)
    getattr(ref, name)(*args, want, 1)
    big = np.full((B, shape[1] + 1, 2 * shape[2]), np.nan, dtype=dtype)
    out = {"c": _unwritten(want), "rows": big[:, :shape[1], :shape[2]], "strided": big[:, :shape[1], ::2]}[out_layout]
    getattr(kernel_module(backend), name)(*args, out, 2)
    _assert_all_close([out], [want], dtype, name)


@_every_backend_and_dtype
@PROPERTY
@given(_common(), st.integers(1, 7), st.booleans())
def test_rank1_update(backend, dtype, common, p, in_place):
    B, n, mask, gen, layout = common
    m = n + 3
    w = _normal(gen, (B, p, m), dtype, mask)
    s_w = _normal(gen, (B,), dtype, mask)                 # 0: the dropped term of a reset sample
    d, a, s_d = (layout(_normal(gen, shape, dtype)) for shape in ((B, p), (B, m), (B,)))
    results = []
    for ops in (ref, kernel_module(backend)):
        w_in = w.copy()
        out = w_in if in_place else _unwritten(w)
        ops.rank1_update(w_in if in_place else layout(w_in), s_w, d, a, s_d, out, 2)
        results.append([out])
    _assert_all_close(results[1], results[0], dtype, "rank1_update")


@_every_backend_and_dtype
@PROPERTY
@given(_common(), st.integers(1, 3), st.integers(1, 6), st.booleans())
def test_kf_combine(backend, dtype, common, C, p, in_place):
    B, N, mask, gen, layout = common
    m = N + 3
    HA, u = _normal(gen, (B, C, p, N), dtype, mask), _normal(gen, (B, C, m), dtype, mask)
    Dt, a = layout(_normal(gen, (B, p, N), dtype)), layout(_normal(gen, (B, m), dtype))
    c1, c2 = layout(random_signs(gen, (B, C), dtype)), layout(random_signs(gen, (B, C), dtype))
    results = []
    for ops in (ref, kernel_module(backend)):
        HA_in, u_in = HA.copy(), u.copy()
        A_out = HA_in if in_place else _unwritten(HA)
        u_out = u_in if in_place else _unwritten(u)
        args = (HA_in, u_in) if in_place else (layout(HA_in), layout(u_in))
        ops.kf_combine(*args, Dt, a, c1, c2, A_out, u_out, 2)
        results.append([A_out, u_out])
    _assert_all_close(results[1], results[0], dtype, "kf_combine")


@_every_backend_and_dtype
@PROPERTY
@given(_common(), st.integers(1, 3), st.booleans())
def test_kf_fused(backend, dtype, common, C, u_in_place):
    B, n, mask, gen, layout = common
    W, lam, dz, a = _diagonal_step(gen, B, n, dtype, layout)
    A = _normal(gen, (B, C, n, n), dtype, mask)
    u = _normal(gen, (B, C, n + 3), dtype, mask)
    c1, c2 = layout(random_signs(gen, (B, C), dtype)), layout(random_signs(gen, (B, C), dtype))
    results = []
    for ops in (ref, kernel_module(backend)):
        u_in = u.copy()
        A_out, u_out = _unwritten(A), u_in if u_in_place else _unwritten(u)
        ops.kf_fused(layout(A.copy()), u_in if u_in_place else layout(u_in), W, lam, dz, a, c1, c2, A_out, u_out, 2)
        results.append([A_out, u_out])
    _assert_all_close(results[1], results[0], dtype, "kf_fused")


@_every_backend_and_dtype
@PROPERTY
@given(_common())
def test_uoro_fused(backend, dtype, common):
    B, n, mask, gen, layout = common
    W, lam, dz, a = _diagonal_step(gen, B, n, dtype, layout)
    v, w = _normal(gen, (B, n), dtype, mask), _normal(gen, (B, n, n + 3), dtype, mask)
    w_sq = np.einsum("bpm,bpm->b", w, w, dtype=np.float64)
    nu = layout(random_signs(gen, (B, n), dtype))
    results = []
    for ops in (ref, kernel_module(backend)):
        state = [v.copy(), w.copy(), w_sq.copy()]
        ops.uoro_fused(*state, W, lam, dz, a, nu, 2)
        results.append(state)
    _assert_all_close(results[1], results[0], dtype, "uoro_fused")


@_every_backend_and_dtype
@PROPERTY
@given(_common(max_n=5), st.integers(1, 4), st.integers(1, 3))
def test_ok_fused(backend, dtype, common, r, steps):
    """``steps`` steps in a row, each backend from its own deferred state (A, C, dzp)."""
    B, n, mask, gen, layout = common
    A = _normal(gen, (B, r, n, n), dtype, mask)
    u = _normal(gen, (B, r, n + 3), dtype, mask)
    calls = [(*_diagonal_step(gen, B, n, dtype, layout), layout(random_signs(gen, (B, r + 1), dtype)))
             for _ in range(steps)]
    results = []
    for ops in (ref, kernel_module(backend)):
        state, u_now = (A, None, None), u
        for W, lam, dz, a, signs in calls:
            F, u_now, state, Fc = ok_fused_step(ops, state[0], layout(u_now.copy()), W, lam, dz, a, signs,
                                                C=state[1], dzp=state[2], c=layout(lam.copy()))
        results.append([F, u_now, np.einsum("brij,brm->bijm", F, u_now), Fc])
    _assert_all_close(results[1], results[0], dtype, "ok_fused")


@_every_backend_and_dtype
@PROPERTY
@given(_common(), st.integers(1, 4), st.integers(1, 40), st.integers(1, 12))
def test_ok_reduce(backend, dtype, common, r, P, m):
    B, _, mask, gen, layout = common
    k = r + 1
    V = gen.standard_normal((B, k, P)) * np.exp(gen.standard_normal((B, k, 1)))
    U = gen.standard_normal((B, k, m)) * np.exp(gen.standard_normal((B, k, 1)))
    V[mask], U[mask] = 0.0, 0.0
    V, U, signs = layout(V.astype(dtype)), layout(U.astype(dtype)), layout(random_signs(gen, (B, k), dtype))
    results = []
    for ops in (ref, kernel_module(backend)):
        V_out, U_out = np.full((B, r, P), np.nan, dtype=dtype), np.full((B, r, m), np.nan, dtype=dtype)
        ops.ok_reduce(V, U, signs, V_out, U_out, 2)
        results.append([V_out, U_out, np.einsum("brp,brm->bpm", V_out, U_out)])
    _assert_all_close(results[1], results[0], dtype, "ok_reduce")
