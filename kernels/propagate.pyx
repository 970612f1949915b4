# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Propagation kernels of the Cython backend: ``jvp_blocks``, ``outer_add``, ``rank1_update``, ``kf_combine``.

Same semantics and argument order as :mod:`kfrtrl._reference.kernels`; the
last argument is the number of OpenMP threads. Input arrays may be any
layout (non-contiguous ones are copied; the recurrent slice ``Vr`` and the
transposed weight ``Wt`` are read in place when BLAS can stride them);
output arrays must be C-contiguous (``jvp_blocks``' ``out`` only per sample, or
it goes through a copy) and must not overlap the inputs, except that ``kf_combine`` may write
``A_out`` over ``HA`` and ``rank1_update`` ``w_out`` over ``w`` (as the
estimators do).
"""
import numpy as np

cimport cython
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt
from libc.string cimport memcpy

from _blas cimport KFRTRL_OPENMP, gemm, sumsq, threads_for
from _blas cimport PARALLEL_MIN_WORK as _MIN_WORK

# Elements of work from which the kernels of this backend run in parallel.
PARALLEL_MIN_WORK = _MIN_WORK


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(KFRTRL_OPENMP)


def _gemm_operand(X):
    """2-D ``X`` -> (array, trans flag, row stride) that :func:`gemm` reads in place.

    Row-major layouts pass as 'n', column-major (transposed views such as
    ``W[:, :k].T``) as 't' (flags as character codes); anything else is
    copied to C order first.
    """
    rows, cols = X.shape
    item = X.itemsize
    s0, s1 = X.strides
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(cols, 1):
        return X, ord('n'), s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(rows, 1):
        return X, ord('t'), s1 // item
    X = np.ascontiguousarray(X)
    return X, ord('n'), max(cols, 1)


def jvp_blocks(V, Vr, Wt, lam, dz, out, n_threads):
    """``out = Λ V + D (Vr @ Wt)``: one Jacobian layer on a stack of tangents.

    Shapes as :func:`kfrtrl._reference.kernels.jvp_blocks`: V (B, K, S_in*n),
    Vr (B, K, n_rec), Wt (n_rec, Z*n), lam (B, S, S_in, n), dz (B, S, Z, n),
    out (B, K, S*n), written in place when each sample's (K, S*n) block is
    C-contiguous (the batch stride is free), else through a copy. Two routes:

    - Elman-type layers (S = S_in = Z = 1, Vr is all of V) with K >= n: the
      layer is folded into one (n, n) matrix per sample, ``M_b = diag(λ_b) +
      Wt diag(d_b)`` (B n² work), and ``out_b = V_b M_b`` is one BLAS GEMM
      per sample: no element-wise pass. With several threads and samples the
      samples run in parallel, BLAS held at one thread (one fork-join instead
      of one per GEMM: measured ~10x faster on a loaded machine).
    - otherwise ``Vr @ Wt`` of the whole batch is one BLAS GEMM, written into
      ``out`` when Z <= S (else into a temporary), then one fused element-wise
      pass, parallel over the B*K tangents.

    Otherwise GEMMs run outside any parallel loop, threaded by BLAS.
    """
    item, width = out.itemsize, out.shape[2]
    if (width > 1 and out.strides[2] != item) or (out.shape[1] > 1 and out.strides[1] != width * item):
        target = np.empty(out.shape, dtype=out.dtype)  # the kernels write C-contiguous blocks
        jvp_blocks(V, Vr, Wt, lam, dz, target, n_threads)
        out[...] = target
        return
    B, K, _ = V.shape
    _, S, Z, n = dz.shape
    n_rec = Vr.shape[2]
    dtype = out.dtype
    if S == Z == lam.shape[2] == 1 and K >= n and _same_array(Vr, V):
        _jvp_folded_call(V, Wt, lam, dz, out, n_threads)
        return
    A, ta, lda = _gemm_operand(Vr.reshape(B * K, n_rec))
    W, tb, ldb = _gemm_operand(Wt)
    if Z <= S and out.flags.c_contiguous:
        Y = out.reshape(B * K, S * n)
    else:
        Y = np.empty((B * K, Z * n), dtype=dtype)
    n_threads = threads_for(n_threads, out.size)
    rows = np.empty((n_threads, Z * n), dtype=dtype)
    V, lam, dz = np.ascontiguousarray(V), np.ascontiguousarray(lam), np.ascontiguousarray(dz)
    if dtype == np.float32:
        _jvp_blocks[float](V, A, ta, lda, W, tb, ldb, lam, dz, out, Y, rows, n_threads)
    else:
        _jvp_blocks[double](V, A, ta, lda, W, tb, ldb, lam, dz, out, Y, rows, n_threads)


def _same_array(X, Y):
    """True if ``X`` and ``Y`` are the same view of memory (data pointer, shape, strides)."""
    return (X.shape == Y.shape and X.strides == Y.strides
            and cnp.PyArray_DATA(X) == cnp.PyArray_DATA(Y))


def _jvp_folded_call(V, Wt, lam, dz, out, n_threads):
    B, K, n = V.shape
    V, Wt = np.ascontiguousarray(V), np.ascontiguousarray(Wt)
    lam, dz = np.ascontiguousarray(lam), np.ascontiguousarray(dz)
    n_par = threads_for(min(n_threads, B), out.size)
    M = np.empty((n_par, n, n), dtype=out.dtype)
    if n_par > 1:
        from kfrtrl.threads import blas_limit

        with blas_limit(1):
            _jvp_folded_dispatch(V, Wt, lam, dz, out, M, n_par)
    else:
        _jvp_folded_dispatch(V, Wt, lam, dz, out, M, n_par)


def _jvp_folded_dispatch(V, Wt, lam, dz, out, M, n_par):
    if out.dtype == np.float32:
        _jvp_folded[float](V, Wt, lam, dz, out, M, n_par)
    else:
        _jvp_folded[double](V, Wt, lam, dz, out, M, n_par)


cdef void _jvp_folded(const floating[:, :, ::1] V, const floating[:, ::1] Wt,
                      const floating[:, :, :, ::1] lam, const floating[:, :, :, ::1] dz,
                      floating[:, :, :] out, floating[:, :, ::1] M, int n_par) noexcept nogil:
    """out_b = V_b M_b, M_b = diag(λ_b) + Wt diag(d_b): one (n, n) matrix and one GEMM per sample.

    ``out`` (B, K, n) may have any batch stride (its (K, n) blocks are C-contiguous);
    M (n_par, n, n) holds one M_b per thread, built just before its GEMM reads it.
    Samples run in parallel (each GEMM on one BLAS thread: the caller holds BLAS
    at 1) when n_par > 1, else in turn with BLAS threading each GEMM.
    """
    cdef Py_ssize_t K = V.shape[1], n = V.shape[2], b, s, t
    cdef floating *row
    cdef floating *Mb
    for b in prange(V.shape[0], nogil=True, num_threads=n_par, schedule='static'):
        Mb = &M[threadid(), 0, 0]
        for s in range(n):
            row = Mb + s * n
            for t in range(n):
                row[t] = Wt[s, t] * dz[b, 0, 0, t]
            row[s] = row[s] + lam[b, 0, 0, s]
        gemm(c'n', c'n', <int> K, <int> n, <int> n, <floating> 1.0, &V[b, 0, 0], <int> n,
             Mb, <int> n, <floating> 0.0, &out[b, 0, 0], <int> n)


cdef void _jvp_blocks(const floating[:, :, ::1] V, const floating[:, :] A, char ta, int lda,
                      const floating[:, :] W, char tb, int ldb,
                      const floating[:, :, :, ::1] lam, const floating[:, :, :, ::1] dz,
                      floating[:, :, :] out, floating[:, ::1] Y, floating[:, ::1] rows,
                      int n_threads) noexcept nogil:
    cdef Py_ssize_t K = V.shape[1], S = dz.shape[1], Z = dz.shape[2], n = dz.shape[3]
    cdef Py_ssize_t S_in = lam.shape[2]
    cdef Py_ssize_t BK = V.shape[0] * K, bk, b, i, j, z, t
    cdef floating *y
    cdef floating *o
    cdef const floating *c
    cdef const floating *v
    gemm(ta, tb, <int> BK, <int> (Z * n), A.shape[1], <floating> 1.0, &A[0, 0], lda,
         &W[0, 0], ldb, <floating> 0.0, &Y[0, 0], <int> Y.shape[1])
    for bk in prange(BK, nogil=True, num_threads=n_threads, schedule='static'):
        b = bk // K
        y = &rows[threadid(), 0]               # this row of Y, copied: Y may live in out
        memcpy(y, &Y[bk, 0], Z * n * sizeof(floating))
        v = &V[b, bk - b * K, 0]
        for i in range(S):
            o = &out[b, bk - b * K, i * n]
            c = &dz[b, i, 0, 0]
            for t in range(n):
                o[t] = c[t] * y[t]
            for z in range(1, Z):
                c = &dz[b, i, z, 0]
                for t in range(n):
                    o[t] = o[t] + c[t] * y[z * n + t]
            for j in range(S_in):
                c = &lam[b, i, j, 0]
                for t in range(n):
                    o[t] = o[t] + c[t] * v[j * n + t]


def outer_add(G, Dt, a, n_threads):
    """Exact RTRL immediate term ``G[b, i, j, :] += Dt[b, i, :] * a[b, j]``, in place.

    G (B, p, m, N) C-contiguous; Dt (B, p, N); a (B, m). Parallel over the B*p rows.
    """
    Dt, a = np.ascontiguousarray(Dt), np.ascontiguousarray(a)
    n_threads = threads_for(n_threads, G.size)
    if G.dtype == np.float32:
        _outer_add[float](G, Dt, a, n_threads)
    else:
        _outer_add[double](G, Dt, a, n_threads)


cdef void _outer_add(floating[:, :, :, ::1] G, const floating[:, :, ::1] Dt,
                     const floating[:, ::1] a, int n_threads) noexcept nogil:
    cdef Py_ssize_t p = G.shape[1], m = G.shape[2], N = G.shape[3], bi, b, i, j, t
    cdef floating aj
    cdef floating *g
    cdef const floating *d
    for bi in prange(G.shape[0] * p, nogil=True, num_threads=n_threads, schedule='static'):
        b = bi // p
        i = bi - b * p
        d = &Dt[b, i, 0]
        for j in range(m):
            g = &G[b, i, j, 0]
            aj = a[b, j]
            for t in range(N):
                g[t] = g[t] + d[t] * aj


def rank1_update(w, s_w, d, a, s_d, w_out, n_threads):
    """The rank-one estimators' update ``w_out[b] = w[b] * s_w[b] + (d[b] ⊗ a[b]) * s_d[b]``.

    w (B, p, m); s_w, s_d (B,); d (B, p); a (B, m); w_out (B, p, m)
    C-contiguous, written (may be w). One pass, parallel over the B*p rows.
    """
    w, s_w, d, a, s_d = (np.ascontiguousarray(x) for x in (w, s_w, d, a, s_d))
    n_threads = threads_for(n_threads, w_out.size)
    if w_out.dtype == np.float32:
        _rank1_update[float](w, s_w, d, a, s_d, w_out, n_threads)
    else:
        _rank1_update[double](w, s_w, d, a, s_d, w_out, n_threads)


cdef void _rank1_update(const floating[:, :, ::1] w, const floating[::1] s_w,
                        const floating[:, ::1] d, const floating[:, ::1] a,
                        const floating[::1] s_d, floating[:, :, ::1] w_out,
                        int n_threads) noexcept nogil:
    cdef Py_ssize_t p = w_out.shape[1], m = w_out.shape[2], bi, b, i, j
    cdef floating sw, di, sd
    cdef const floating *x
    cdef const floating *y
    cdef floating *o
    for bi in prange(w_out.shape[0] * p, nogil=True, num_threads=n_threads, schedule='static'):
        b = bi // p
        i = bi - b * p
        sw = s_w[b]
        di = d[b, i]
        sd = s_d[b]
        x = &w[b, i, 0]
        y = &a[b, 0]
        o = &w_out[b, i, 0]
        for j in range(m):
            o[j] = x[j] * sw + (di * y[j]) * sd


def kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's unbiased merge (see :func:`kfrtrl._reference.kernels.kf_combine`).

    HA (B, C, p, N); u (B, C, m); Dt (B, p, N); a (B, m); c1, c2 (B, C) of ±1;
    A_out (B, C, p, N) and u_out (B, C, m) C-contiguous, written (A_out may be HA).
    Norms are accumulated in float64. Two passes over HA: its norm, then the merge.
    """
    dtype = u_out.dtype
    B = A_out.shape[0]
    side = np.empty((B, 2), dtype=np.float64)
    HA, u, Dt, a, c1, c2 = (np.ascontiguousarray(x) for x in (HA, u, Dt, a, c1, c2))
    n_threads = threads_for(n_threads, A_out.size)
    if dtype == np.float32:
        _kf_combine[float](HA, u, Dt, a, c1, c2, A_out, u_out, side, n_threads)
    else:
        _kf_combine[double](HA, u, Dt, a, c1, c2, A_out, u_out, side, n_threads)


cdef inline double _balance(double n_left, double n_right) noexcept nogil:
    """sqrt(n_left / n_right), and 1 where either norm is zero."""
    if n_left > 0.0 and n_right > 0.0:
        return sqrt(n_left / n_right)
    return 1.0


cdef void _kf_combine(const floating[:, :, :, ::1] HA, const floating[:, :, ::1] u,
                      const floating[:, :, ::1] Dt, const floating[:, ::1] a,
                      const floating[:, ::1] c1, const floating[:, ::1] c2,
                      floating[:, :, :, ::1] A_out, floating[:, :, ::1] u_out,
                      double[:, ::1] side, int n_threads) noexcept nogil:
    cdef Py_ssize_t B = A_out.shape[0], C = A_out.shape[1], m = u_out.shape[2]
    cdef Py_ssize_t PN = A_out.shape[2] * A_out.shape[3], b, bb, bc, c, t
    cdef double p1, p2
    cdef floating f1, f2
    cdef const floating *h
    cdef const floating *d
    cdef floating *o
    with nogil, parallel(num_threads=n_threads):  # one fork-join, a barrier between the loops
        for b in prange(B, schedule='static'):
            side[b, 0] = sqrt(sumsq(&Dt[b, 0, 0], PN))
            side[b, 1] = sqrt(sumsq(&a[b, 0], m))
        for bc in prange(B * C, schedule='static'):
            bb = bc // C
            c = bc - bb * C
            h = &HA[bb, c, 0, 0]
            p1 = _balance(sqrt(sumsq(h, PN)), sqrt(sumsq(&u[bb, c, 0], m)))
            p2 = _balance(side[bb, 0], side[bb, 1])
            f1 = <floating> (c1[bb, c] / p1)
            f2 = <floating> (c2[bb, c] / p2)
            d = &Dt[bb, 0, 0]
            o = &A_out[bb, c, 0, 0]
            for t in range(PN):
                o[t] = f1 * h[t] + f2 * d[t]
            f1 = <floating> (c1[bb, c] * p1)
            f2 = <floating> (c2[bb, c] * p2)
            for t in range(m):
                u_out[bb, c, t] = f1 * u[bb, c, t] + f2 * a[bb, t]
