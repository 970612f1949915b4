"""The Cython/OpenMP backend: what was built, and each kernel against the numpy reference.

Skipped when the extensions are not built (``pip install .`` or ``python
setup.py build_ext --inplace``); CI makes that an error through
``KFRTRL_REQUIRE_BACKENDS`` (tests/test_config.py). Whole estimators on this
backend are compared with numpy in tests/test_backends.py; here each kernel
is driven directly, including the layouts the estimators do not produce.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _helpers import rel_max
import kfrtrl._reference as ref

cy = pytest.importorskip("kfrtrl._cy", reason="Cython extensions not built")

ROOT = Path(__file__).resolve().parents[1]
TOL = {np.float64: 1e-10, np.float32: 1e-5}
N_IN = 2


def _jvp_inputs(gen, B, K, S, S_in, Z, n, dtype):
    """V, W (Z*n, n_rec + 3) and the layer's lam, dz; n_rec = n (the first block of V is recurrent)."""
    V = gen.standard_normal((B, K, S_in * n)).astype(dtype)
    W = gen.standard_normal((Z * n, n + 3)).astype(dtype)
    lam = gen.standard_normal((B, S, S_in, n)).astype(dtype)
    dz = gen.standard_normal((B, S, Z, n)).astype(dtype)
    return V, W, lam, dz


def _ok_inputs(gen, B, r, n, dtype):
    """Elman-shaped OK factors: V (B, r+1, n*n), U (B, r+1, n + N_IN + 1), signs (B, r+1)."""
    P, m = n * n, n + N_IN + 1
    V = gen.standard_normal((B, r + 1, P)).astype(dtype)
    U = gen.standard_normal((B, r + 1, m)).astype(dtype)
    signs = (2 * gen.integers(0, 2, size=(B, r + 1)) - 1).astype(dtype)
    return V, U, signs


def _ok_run(ops, V, U, signs, n_threads=2):
    B, k, P = V.shape
    V_out = np.full((B, k - 1, P), np.nan, dtype=V.dtype)
    U_out = np.full((B, k - 1, U.shape[2]), np.nan, dtype=U.dtype)
    ops.ok_reduce(V, U, signs, V_out, U_out, n_threads)
    return V_out, U_out


def _assert_ok_matches(V, U, signs):
    dtype = V.dtype.type
    V_ref, U_ref = _ok_run(ref, V, U, signs)
    V_cy, U_cy = _ok_run(cy, V, U, signs)
    assert V_cy.dtype == V.dtype and U_cy.dtype == U.dtype
    assert rel_max(V_cy, V_ref) <= TOL[dtype]
    assert rel_max(U_cy, U_ref) <= TOL[dtype]
    total_ref = np.einsum("brm,brp->bmp", U_ref, V_ref)
    assert rel_max(np.einsum("brm,brp->bmp", U_cy, V_cy), total_ref) <= TOL[dtype]


# ---- what was built ----


def _calls_openmp(path):
    """True if the shared object calls an OpenMP runtime (GCC's libgomp or LLVM's libomp)."""
    data = Path(path).read_bytes()
    return b"GOMP_parallel" in data or b"__kmpc_fork_call" in data


def test_openmp_enabled_reports_how_the_extensions_were_built():
    from kfrtrl._cy import elementwise, propagate, reduce

    flag = cy.openmp_enabled()
    assert isinstance(flag, bool)
    for module in (elementwise, propagate, reduce):
        assert _calls_openmp(module.__file__) == flag, module.__file__


def test_exposes_exactly_the_reference_kernels():
    import inspect

    import kfrtrl._reference as reference

    assert sorted(cy.__all__) == sorted(reference.__all__)
    for name in reference.__all__:
        params = list(inspect.signature(getattr(reference, name)).parameters)
        assert list(inspect.signature(getattr(cy, name)).parameters) == params, name


# ---- kernels against the reference ----


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("S, S_in, Z", [(1, 1, 1), (2, 2, 4), (1, 1, 2), (2, 1, 3), (3, 3, 1)])
def test_jvp_blocks(S, S_in, Z, n, B, dtype):
    """All three routes against numpy: Elman-type with K = 3 >= n (n = 1, 3) folds the layer
    into a per-sample matrix; otherwise Z <= S writes the GEMM into out, Z > S into a temporary."""
    gen = np.random.default_rng(10 * n + B)
    V, W, lam, dz = _jvp_inputs(gen, B, 3, S, S_in, Z, n, dtype)
    Vr, Wt = V[:, :, :n], W[:, :n].T
    out_ref = np.empty((B, 3, S * n), dtype=dtype)
    ref.jvp_blocks(V, Vr, Wt, lam, dz, out_ref, 1)
    out = np.full_like(out_ref, np.nan)
    cy.jvp_blocks(V, Vr, Wt, lam, dz, out, 2)
    assert rel_max(out, out_ref) <= TOL[dtype]


@pytest.mark.parametrize("layout", ["transposed view", "C order", "strided (copied)"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jvp_blocks_reads_every_weight_layout(layout, dtype):
    """Wt as the estimators pass it (W[:, :n].T, column-major), row-major, and neither."""
    gen = np.random.default_rng(7)
    B, K, S, Z, n = 3, 4, 2, 2, 5
    V, W, lam, dz = _jvp_inputs(gen, B, K + 2, S, S, Z, n, dtype)
    V = V[:, 1:K + 1]                          # Vr's (B, K) axes do not collapse: copied for GEMM
    Wt = {"transposed view": W[:, :n].T,
          "C order": np.ascontiguousarray(W[:, :n].T),
          "strided (copied)": np.repeat(W[:, :n].T, 2, axis=1)[:, ::2]}[layout]
    assert np.array_equal(Wt, W[:, :n].T)
    out_ref = np.empty((B, K, S * n), dtype=dtype)
    ref.jvp_blocks(V, V[:, :, :n], Wt, lam, dz, out_ref, 1)
    out = np.empty_like(out_ref)
    cy.jvp_blocks(V, V[:, :, :n], Wt, lam, dz, out, 2)
    assert rel_max(out, out_ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_outer_add(n, B, dtype):
    gen = np.random.default_rng(n + B)
    m = n + N_IN + 1
    G = gen.standard_normal((B, n, m, n)).astype(dtype)
    Dt = gen.standard_normal((B, n, n)).astype(dtype)
    a = gen.standard_normal((B, m)).astype(dtype)
    G_ref = G.copy()
    ref.outer_add(G_ref, Dt, a, 1)
    cy.outer_add(G, Dt, a, 2)
    assert rel_max(G, G_ref) <= TOL[dtype]


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_rank1_update(n, B, dtype, in_place):
    gen = np.random.default_rng(5 * n + B)
    m = n + N_IN + 1
    w = gen.standard_normal((B, n, m)).astype(dtype)
    s_w, s_d = (gen.standard_normal(B).astype(dtype) for _ in range(2))
    d, a = gen.standard_normal((B, n)).astype(dtype), gen.standard_normal((B, m)).astype(dtype)
    w_ref = np.empty_like(w)
    ref.rank1_update(w, s_w, d, a, s_d, w_ref, 1)
    w_out = w if in_place else np.empty_like(w)
    cy.rank1_update(w, s_w, d, a, s_d, w_out, 2)
    assert rel_max(w_out, w_ref) <= TOL[dtype]


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_kf_combine(n, B, dtype, in_place):
    """Including zero factors (p = 1 there) and A_out written over HA, as KF does."""
    gen = np.random.default_rng(3 * n + B)
    C, m = 2, n + N_IN + 1
    HA = gen.standard_normal((B, C, n, n)).astype(dtype)
    u = gen.standard_normal((B, C, m)).astype(dtype)
    Dt = gen.standard_normal((B, n, n)).astype(dtype)
    a = gen.standard_normal((B, m)).astype(dtype)
    HA[0, 0] = 0.0
    u[-1, -1] = 0.0
    c1, c2 = ((2 * gen.integers(0, 2, size=(B, C)) - 1).astype(dtype) for _ in range(2))
    A_ref, u_ref = np.empty_like(HA), np.empty_like(u)
    ref.kf_combine(HA, u, Dt, a, c1, c2, A_ref, u_ref, 1)
    A_out = HA.copy() if in_place else np.empty_like(HA)
    u_out = np.empty_like(u)
    cy.kf_combine(A_out if in_place else HA, u, Dt, a, c1, c2, A_out, u_out, 2)
    assert rel_max(A_out, A_ref) <= TOL[dtype]
    assert rel_max(u_out, u_ref) <= TOL[dtype]


@pytest.mark.parametrize("route", ["usual", "Householder only"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("r", [1, 2, 4])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_ok_reduce(n, r, B, dtype, route, monkeypatch):
    """Factors (same sign convention) and reconstructed sums; n = 1 has P = 1 < r + 1 (thin SVD).

    "usual" takes the Gram route wherever it can; a MIN_PIVOT above 1 (pivots
    of a unit-diagonal Cholesky are <= 1) sends every sample the Householder way.
    """
    if route == "Householder only":
        monkeypatch.setattr("kfrtrl._thresholds.MIN_PIVOT", 2.0)
    V, U, signs = _ok_inputs(np.random.default_rng(100 * n + 10 * r + B), B, r, n, dtype)
    _assert_ok_matches(V, U, signs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("case", ["zero term", "two zero terms", "one term left", "duplicate term",
                                  "zero u", "all zero"])
def test_ok_reduce_rank_deficient(case, n, dtype):
    """Exactly rank-deficient stacks, as right after a reset: thresholded σ, exact kept terms.

    Zero terms are dropped by the Gram route (also when P = 1 < r + 1, n = 1,
    once few enough terms are left); a duplicate sends the sample to Householder.
    """
    V, U, signs = _ok_inputs(np.random.default_rng(5), 4, 3, n, dtype)
    if case == "zero term":
        V[:, 1] = 0.0
    elif case == "two zero terms":
        V[:, :2] = 0.0
    elif case == "one term left":
        V[:, 1:] = 0.0
    elif case == "duplicate term":
        V[:, 2] = V[:, 0]
        U[:, 2] = U[:, 0]
    elif case == "zero u":
        U[:, 0] = 0.0
    else:
        V[1:3] = 0.0
        U[2:] = 0.0
    _assert_ok_matches(V, U, signs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spread", [1e-1, 1e-3, 1e-6])
def test_ok_reduce_nearly_dependent_terms(spread, dtype):
    """A term within ``spread`` of another: the Gram route above MIN_PIVOT, Householder below."""
    gen = np.random.default_rng(8)
    V, U, signs = _ok_inputs(gen, 3, 3, 5, dtype)
    V[:, 2] = V[:, 0] + spread * gen.standard_normal(V[:, 0].shape).astype(dtype)
    U[:, 3] = U[:, 1] + spread * gen.standard_normal(U[:, 1].shape).astype(dtype)
    _assert_ok_matches(V, U, signs)


def _fused_inputs(gen, B, n, dtype):
    """An Elman-type step: W (n, m = n + 3), lam, dz (B, n), a (B, m)."""
    m = n + 3
    W = gen.standard_normal((n, m)).astype(dtype)
    lam = gen.uniform(0.0, 1.0, (B, n)).astype(dtype)
    dz = gen.standard_normal((B, n)).astype(dtype)
    a = gen.standard_normal((B, m)).astype(dtype)
    return W, lam, dz, a


def _signs(gen, shape, dtype):
    """Independent ±1 of ``dtype``."""
    return (2 * gen.integers(0, 2, size=shape) - 1).astype(dtype)


def _kf_fused_inputs(gen, B, C, n, dtype, reset):
    """A (B, C, n, n), u (B, C, m), the step and signs; ``reset`` zeroes norms: sample 0's
    factors (as after a reset: A = 0, u = 0, so p1 = 1), chain 0 of the last sample's A
    (|H A| = 0 with u != 0) and the last sample's dz (D = 0, so p2 = 1)."""
    W, lam, dz, a = _fused_inputs(gen, B, n, dtype)
    A = gen.standard_normal((B, C, n, n)).astype(dtype)
    u = gen.standard_normal((B, C, n + 3)).astype(dtype)
    if reset:
        A[0], u[0] = 0.0, 0.0
        A[-1, 0] = 0.0
        dz[-1] = 0.0
    return A, u, W, lam, dz, a, _signs(gen, (B, C), dtype), _signs(gen, (B, C), dtype)


def _uoro_fused_inputs(gen, B, n, dtype, reset):
    """v (B, n), w (B, n, m), w_sq = |w_b|² (float64), the step and ν; ``reset`` zeroes sample 0's
    v and w (after a reset: ρ0 = 0) and the last sample's v only (H v = 0, w != 0: ρ0 = 0)."""
    W, lam, dz, a = _fused_inputs(gen, B, n, dtype)
    v = gen.standard_normal((B, n)).astype(dtype)
    w = gen.standard_normal((B, n, n + 3)).astype(dtype)
    if reset:
        v[0], w[0] = 0.0, 0.0
        v[-1] = 0.0
    w_sq = np.einsum("bpm,bpm->b", w, w, dtype=np.float64)
    return v, w, w_sq, W, lam, dz, a, _signs(gen, (B, n), dtype)


def _kf_fused_run(ops, A, u, W, lam, dz, a, c1, c2, n_threads, in_place=True):
    """(A_out, u_out) of ``ops.kf_fused``; ``in_place`` writes u_out over (a copy of) u, as KF does."""
    A_out = np.full_like(A, np.nan)
    u_out = u.copy() if in_place else np.full_like(u, np.nan)
    ops.kf_fused(A, u_out if in_place else u, W, lam, dz, a, c1, c2, A_out, u_out, n_threads)
    return A_out, u_out


def _uoro_fused_run(ops, v, w, w_sq, W, lam, dz, a, nu, n_threads):
    """The updated copies (v, w, w_sq) of ``ops.uoro_fused``."""
    v, w, w_sq = v.copy(), w.copy(), w_sq.copy()
    ops.uoro_fused(v, w, w_sq, W, lam, dz, a, nu, n_threads)
    return v, w, w_sq


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_kf_fused(n, B, C, dtype, reset, n_threads):
    """u_out written over u (as KF does) and into a separate array; zero norms with ``reset``."""
    args = _kf_fused_inputs(np.random.default_rng(20 * n + 4 * B + C), B, C, n, dtype, reset)
    A_ref, u_ref = _kf_fused_run(ref, *args, 1)
    for in_place in (True, False):
        A_out, u_out = _kf_fused_run(cy, *args, n_threads, in_place)
        assert A_out.dtype == A_ref.dtype and u_out.dtype == u_ref.dtype
        assert rel_max(A_out, A_ref) <= TOL[dtype]
        assert rel_max(u_out, u_ref) <= TOL[dtype]
    if reset:                                  # from zero factors, A' ⊗ u' = D ⊗ a exactly
        dz, a = args[4], args[5]
        for c in range(C):
            assert rel_max(np.outer(A_out[0, c], u_out[0, c]), np.outer(np.diag(dz[0]), a[0])) <= TOL[dtype]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_uoro_fused(n, B, dtype, reset, n_threads):
    """v, w and the carried |w|² against numpy; zero norms (ρ0 = 0) with ``reset``."""
    args = _uoro_fused_inputs(np.random.default_rng(30 * n + B), B, n, dtype, reset)
    v_ref, w_ref, sq_ref = _uoro_fused_run(ref, *args, 1)
    v, w, w_sq = _uoro_fused_run(cy, *args, n_threads)
    assert (v.dtype, w.dtype, w_sq.dtype) == (dtype, dtype, np.float64)
    assert rel_max(v, v_ref) <= TOL[dtype]
    assert rel_max(w, w_ref) <= TOL[dtype]
    assert rel_max(w_sq, sq_ref) <= TOL[dtype]
    assert rel_max(w_sq, np.einsum("bpm,bpm->b", w, w, dtype=np.float64)) <= TOL[dtype]
    if reset:                                  # from zero factors, v' ⊗ w' = ν ⊗ (dz ν) ⊗ a exactly
        nu, dz, a = args[7][0], args[5][0], args[6][0]
        assert rel_max(np.multiply.outer(v[0], w[0]), np.multiply.outer(nu, np.outer(dz * nu, a))) <= TOL[dtype]


def _ok_fused_inputs(gen, B, r, n, dtype, case):
    """A (B, r, n, n), u (B, r, m), the step and signs (B, r+1). ``case``: "random";
    "reset", sample 0's A and u zero (only the immediate term is left); "equal factors",
    the last sample's A_1 = A_0 (two equal terms H A_i: the Gram route's Cholesky
    breaks down, so the sample takes the Householder route)."""
    W, lam, dz, a = _fused_inputs(gen, B, n, dtype)
    A = gen.standard_normal((B, r, n, n)).astype(dtype)
    u = gen.standard_normal((B, r, n + 3)).astype(dtype)
    if case == "reset":
        A[0], u[0] = 0.0, 0.0
    elif case == "equal factors":
        A[-1, 1] = A[-1, 0]
    return A, u, W, lam, dz, a, _signs(gen, (B, r + 1), dtype)


def _ok_fused_run(ops, A, u, W, lam, dz, a, signs, n_threads):
    """(A_out, u_out) of ``ops.ok_fused``, written into NaN-filled arrays."""
    A_out, u_out = np.full_like(A, np.nan), np.full_like(u, np.nan)
    ops.ok_fused(A, u, W, lam, dz, a, signs, A_out, u_out, n_threads)
    return A_out, u_out


OK_FUSED_CASES = [(case, r, route) for r in (1, 2, 3, 4)
                  for case, route in [("random", "usual"), ("random", "Householder only"),
                                      ("reset", "usual"), ("equal factors", "usual")]
                  if case != "equal factors" or r >= 2]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("case, r, route", OK_FUSED_CASES)
def test_ok_fused(case, r, route, n, B, dtype, n_threads, monkeypatch):
    """Factors (same sign convention) and reconstructed sums against numpy.

    n = 1 has n² = 1 < r + 1 terms (the Householder route); "Householder only"
    (MIN_PIVOT above 1) sends every sample there; from zero factors ("reset")
    the result is exactly the immediate term diag(dz) ⊗ a.
    """
    if route == "Householder only":
        monkeypatch.setattr("kfrtrl._thresholds.MIN_PIVOT", 2.0)
    args = _ok_fused_inputs(np.random.default_rng(1000 * n + 100 * r + 10 * B + len(case)), B, r, n, dtype, case)
    A_ref, u_ref = _ok_fused_run(ref, *args, 1)
    A_out, u_out = _ok_fused_run(cy, *args, n_threads)
    assert A_out.dtype == A_ref.dtype and u_out.dtype == u_ref.dtype
    assert rel_max(A_out, A_ref) <= TOL[dtype]
    assert rel_max(u_out, u_ref) <= TOL[dtype]
    total_ref = np.einsum("brm,brp->bmp", u_ref, A_ref.reshape(B, r, n * n))
    assert rel_max(np.einsum("brm,brp->bmp", u_out, A_out.reshape(B, r, n * n)), total_ref) <= TOL[dtype]
    if case == "reset":
        dz, a = args[4][0], args[5][0]
        total = np.einsum("rm,rp->mp", u_out[0], A_out[0].reshape(r, n * n))
        assert rel_max(total, np.outer(a, np.diag(dz).ravel())) <= TOL[dtype]


def test_ok_fused_parallel_path_is_exact_and_matches_one_thread():
    """Samples in parallel (one BLAS thread each) just past PARALLEL_MIN_WORK, with a reset
    sample and one with equal factors (Householder route): same bits on 1 and 2 threads,
    and the reference."""
    from kfrtrl._thresholds import PARALLEL_MIN_WORK as work

    B, r = 4, 2
    n = int(np.ceil(np.sqrt(work / (B * r))))
    args = _ok_fused_inputs(np.random.default_rng(14), B, r, n, np.float64, "reset")
    A, u = args[0], args[1]
    A[-1, 1] = A[-1, 0]
    assert A.size >= work
    (A_ref, u_ref), one, two = (_ok_fused_run(mod, *args, nt) for mod, nt in ((ref, 1), (cy, 1), (cy, 2)))
    for res_ref, res_one, res_two in zip((A_ref, u_ref), one, two):
        np.testing.assert_array_equal(res_one, res_two)
        assert rel_max(res_two, res_ref) <= TOL[np.float64]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_kernels_read_any_input_layout(dtype):
    """Non-contiguous inputs (a column-major W, strided lam, dz, a, ν, A, u, signs) are copied first."""
    gen = np.random.default_rng(12)
    B, C, n = 3, 2, 5

    def strided(x):                            # the same values through a non-contiguous view
        return np.repeat(x, 2, axis=-1)[..., ::2]

    kf_args = _kf_fused_inputs(gen, B, C, n, dtype, reset=False)
    A_ref, u_ref = _kf_fused_run(ref, *kf_args, 1)
    A, u, W, lam, dz, a, c1, c2 = kf_args
    A_out, u_out = _kf_fused_run(cy, strided(A), u, np.asfortranarray(W), strided(lam), strided(dz),
                                 strided(a), strided(c1), strided(c2), 2)
    assert rel_max(A_out, A_ref) <= TOL[dtype] and rel_max(u_out, u_ref) <= TOL[dtype]

    uoro_args = _uoro_fused_inputs(gen, B, n, dtype, reset=False)
    res_ref = _uoro_fused_run(ref, *uoro_args, 1)
    v, w, w_sq, W, lam, dz, a, nu = uoro_args
    res = _uoro_fused_run(cy, v, w, w_sq, np.asfortranarray(W), strided(lam), strided(dz), strided(a),
                          strided(nu), 2)
    for got, want in zip(res, res_ref):
        assert rel_max(got, want) <= TOL[dtype]

    ok_args = _ok_fused_inputs(gen, B, C, n, dtype, "random")
    ok_ref = _ok_fused_run(ref, *ok_args, 1)
    A, u, W, lam, dz, a, signs = ok_args
    ok_res = _ok_fused_run(cy, strided(A), strided(u), np.asfortranarray(W), strided(lam), strided(dz),
                           strided(a), strided(signs), 2)
    for got, want in zip(ok_res, ok_ref):
        assert rel_max(got, want) <= TOL[dtype]


def test_fused_parallel_path_is_exact_and_matches_one_thread():
    """kf_fused (samples in parallel, one BLAS thread each) and uoro_fused (rows of w in
    parallel) just past PARALLEL_MIN_WORK: same bits on 1 and 2 threads, and the reference."""
    from kfrtrl._thresholds import PARALLEL_MIN_WORK as work

    gen = np.random.default_rng(13)
    B, n = 4, 128                              # KF: B n² >= work
    kf_args = _kf_fused_inputs(gen, B, 1, n, np.float64, reset=True)
    kfs = [_kf_fused_run(mod, *kf_args, nt) for mod, nt in ((ref, 1), (cy, 1), (cy, 2))]

    B, n = 3, 8                                # UORO: a wide W (n, m) so that B n m >= work
    m = -(-work // (B * n))
    v, w, w_sq, W, lam, dz, a, nu = _uoro_fused_inputs(gen, B, n, np.float64, reset=True)
    W, a = gen.standard_normal((n, m)), gen.standard_normal((B, m))
    w = gen.standard_normal((B, n, m))
    w[0] = 0.0
    w_sq = np.einsum("bpm,bpm->b", w, w)
    uoros = [_uoro_fused_run(mod, v, w, w_sq, W, lam, dz, a, nu, nt) for mod, nt in ((ref, 1), (cy, 1), (cy, 2))]

    assert min(kf_args[0].size, w.size) >= work
    for ref_res, one, two in [*zip(*kfs), *zip(*uoros)]:
        np.testing.assert_array_equal(one, two)
        assert rel_max(two, ref_res) <= TOL[np.float64]


# ---- the serial path ----


def test_parallel_path_is_exact_and_matches_one_thread():
    """Above PARALLEL_MIN_WORK the kernels split rows/samples over threads: same bits as 1 thread.

    Sizes are just past the threshold (below it every kernel runs serially),
    and the reference checks the parallel result.
    """
    from kfrtrl._thresholds import PARALLEL_MIN_WORK as work

    gen = np.random.default_rng(11)
    B, n = 4, 16
    V, W, lam, dz = _jvp_inputs(gen, B, work // (B * 2 * n), 2, 2, 4, n, np.float64)
    outs = [np.empty_like(V) for _ in range(3)]
    ref.jvp_blocks(V, V[:, :, :n], W[:, :n].T, lam, dz, outs[0], 1)
    for out, nt in zip(outs[1:], (1, 2)):
        cy.jvp_blocks(V, V[:, :, :n], W[:, :n].T, lam, dz, out, nt)

    nf = 128                                   # the folded Elman route: B n² >= work
    Vf, Wf, lamf, dzf = _jvp_inputs(gen, B, nf, 1, 1, 1, nf, np.float64)
    folds = [np.empty_like(Vf) for _ in range(3)]
    ref.jvp_blocks(Vf, Vf[:, :, :nf], Wf[:, :nf].T, lamf, dzf, folds[0], 1)
    for out, nt in zip(folds[1:], (1, 2)):
        cy.jvp_blocks(Vf, Vf[:, :, :nf], Wf[:, :nf].T, lamf, dzf, out, nt)

    G = gen.standard_normal((B, n, work // (B * n * n), n))
    Dt, a = gen.standard_normal((B, n, n)), gen.standard_normal((B, G.shape[2]))
    Gs = [G.copy() for _ in range(3)]
    ref.outer_add(Gs[0], Dt, a, 1)
    for Gi, nt in zip(Gs[1:], (1, 2)):
        cy.outer_add(Gi, Dt, a, nt)

    HA = gen.standard_normal((B, work // (B * n * n), n, n))
    u = gen.standard_normal((B, HA.shape[1], G.shape[2]))
    c = (2 * gen.integers(0, 2, size=HA.shape[:2]) - 1).astype(np.float64)
    kfs = [(np.empty_like(HA), np.empty_like(u)) for _ in range(3)]
    ref.kf_combine(HA, u, Dt, a, c, -c, *kfs[0], 1)
    for res, nt in zip(kfs[1:], (1, 2)):
        cy.kf_combine(HA, u, Dt, a, c, -c, *res, nt)

    w = G.reshape(B, -1, n)
    s_w, s_d = gen.standard_normal(B), gen.standard_normal(B)
    d1, a1 = gen.standard_normal(w.shape[:2]), gen.standard_normal((B, n))
    r1s = [np.empty_like(w) for _ in range(3)]
    ref.rank1_update(w, s_w, d1, a1, s_d, r1s[0], 1)
    for w_out, nt in zip(r1s[1:], (1, 2)):
        cy.rank1_update(w, s_w, d1, a1, s_d, w_out, nt)

    Vk, Uk, signs = _ok_inputs(gen, B, 3, 64, np.float64)
    oks = [_ok_run(mod, Vk, Uk, signs, nt) for mod, nt in ((ref, 1), (cy, 1), (cy, 2))]

    assert min(V.size, B * nf * nf, G.size, HA.size, w.size, Vk.size) >= work
    for ref_res, one, two in [outs, folds, Gs, r1s, *zip(*kfs), *zip(*oks)]:
        np.testing.assert_array_equal(one, two)
        assert rel_max(two, ref_res) <= TOL[np.float64]


SERIAL_CHECK = """
import importlib.util, sys
import numpy as np
import kfrtrl._reference as ref

def load(name):
    spec = importlib.util.spec_from_file_location("kfrtrl._cy." + name, sys.argv[1 + (name == "reduce")])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

prop, red = load("propagate"), load("reduce")
gen = np.random.default_rng(0)
V, W = gen.standard_normal((3, 4, 10)), gen.standard_normal((20, 8))
lam, dz = gen.standard_normal((3, 2, 2, 5)), gen.standard_normal((3, 2, 4, 5))
o1, o2 = np.empty_like(V), np.empty_like(V)
ref.jvp_blocks(V, V[:, :, :5], W[:, :5].T, lam, dz, o1, 1)
prop.jvp_blocks(V, V[:, :, :5], W[:, :5].T, lam, dz, o2, 2)
Vk, Uk = gen.standard_normal((3, 3, 16)), gen.standard_normal((3, 3, 7))
s = np.array([[1.0, -1.0, 1.0]] * 3)
outs = [(np.empty((3, 2, 16)), np.empty((3, 2, 7))) for _ in range(2)]
ref.ok_reduce(Vk, Uk, s, *outs[0], 1)
red.ok_reduce(Vk, Uk, s, *outs[1], 2)
A, u, W = gen.standard_normal((3, 2, 4, 4)), gen.standard_normal((3, 2, 7)), gen.standard_normal((4, 7))
lam, dz, a = gen.uniform(0.0, 1.0, (3, 4)), gen.standard_normal((3, 4)), gen.standard_normal((3, 7))
fused = [(np.empty_like(A), np.empty_like(u)) for _ in range(2)]
ref.ok_fused(A, u, W, lam, dz, a, s, *fused[0], 1)
red.ok_fused(A, u, W, lam, dz, a, s, *fused[1], 2)
err = max(np.abs(o2 - o1).max(), *(np.abs(x - y).max() for x, y in [*zip(*outs), *zip(*fused)]))
print(prop.openmp_enabled(), red.openmp_enabled(), err)
"""


@pytest.mark.skipif(os.environ.get("KFRTRL_TEST_SERIAL_BUILD") != "1",
                    reason="builds the extensions again (~30 s): set KFRTRL_TEST_SERIAL_BUILD=1")
def test_serial_build_without_openmp(tmp_path):
    """KFRTRL_NO_OPENMP=1 builds serial extensions that still match the reference."""
    shutil.copy(ROOT / "setup.py", tmp_path)
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("*.c", "*.html"))
    env = dict(os.environ, KFRTRL_NO_OPENMP="1")
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "tmp"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "building the Cython kernels serial (no OpenMP) (KFRTRL_NO_OPENMP=1)" in build.stdout
    sos = {p.name.split(".")[0]: p for p in (tmp_path / "lib" / "kfrtrl" / "_cy").glob("*.so")}
    assert sorted(sos) == sorted(p.stem for p in (ROOT / "kernels").glob("*.pyx"))
    assert not any(_calls_openmp(p) for p in sos.values())
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SERIAL_CHECK), str(sos["propagate"]), str(sos["reduce"])],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    prop_omp, red_omp, err = run.stdout.split()
    assert (prop_omp, red_omp) == ("False", "False")
    assert float(err) <= 1e-12
