# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Propagation kernels of the Cython backend: ``jvp_blocks``, ``jvp_dense``, ``jvp_state``, ``rank1_update``,
``kf_combine``, and the fused Elman-type steps ``kf_fused`` and ``uoro_fused``.

Same semantics and argument order as :mod:`kfrtrl._reference.propagate`; the
last argument is the number of OpenMP threads. Input arrays may be any
layout (non-contiguous ones are copied; the recurrent slice ``Vr`` and the
transposed weight ``Wt`` are read in place when BLAS can stride them);
output arrays must be C-contiguous (``jvp_blocks``' ``out`` only per sample, or
it goes through a copy) and must not overlap the inputs, except that ``kf_combine`` may write
``A_out`` over ``HA`` and ``u_out`` over ``u``, ``rank1_update`` ``w_out`` over ``w`` and ``kf_fused``
``u_out`` over ``u`` (as the estimators do); ``uoro_fused`` updates its
C-contiguous ``v``, ``w``, ``w_sq`` in place.
"""
from contextlib import nullcontext

import numpy as np

cimport cython
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt

from _blas cimport KFRTRL_OPENMP, gemm, step_propagate, sumsq

from kfrtrl import _thresholds
from kfrtrl._thresholds import row_blocks, threads_for


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

    Shapes as :func:`kfrtrl._reference.propagate.jvp_blocks`: V (B, K, S_in*n),
    Vr (B, K, n_rec), Wt (n_rec, Z*n), lam (B, S, S_in, n), dz (B, S, Z, n),
    out (B, K, S*n), written in place when each sample's (K, S*n) block is
    C-contiguous (the batch stride is free), else through a copy. Two routes:

    - Elman-type layers (S = S_in = Z = 1, Vr is all of V) with K >= n: the
      layer is folded into one (n, n) matrix per sample, ``H_bᵀ = diag(λ_b) +
      Wt diag(d_b)`` (B n² work), and ``out_b = V_b H_bᵀ`` is one BLAS GEMM
      per sample (``kf_fused``'s propagation, from Wt): no element-wise pass.
      With several threads the samples run in parallel, BLAS held at one thread
      (one fork-join instead of one per GEMM; see docs/performance.md), each split
      in row blocks when they are fewer than the threads.
    - otherwise in blocks of GEMM_BLOCK_ROWS tangents (:mod:`kfrtrl._thresholds`):
      ``Vr @ Wt`` of the block is one BLAS GEMM into a per-thread scratch, then
      the element-wise pass while it is in cache; the blocks run in parallel (BLAS
      held at one thread), the same blocks on any thread count.
    """
    if not _has_contiguous_blocks(out):
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
    n_par = threads_for(n_threads, out.size)
    rows = _thresholds.GEMM_BLOCK_ROWS
    Y = np.empty((n_par, min(rows, B * K), Z * n), dtype=dtype)
    V, lam, dz = np.ascontiguousarray(V), np.ascontiguousarray(lam), np.ascontiguousarray(dz)
    from kfrtrl.threads import blas_limit

    with blas_limit(1) if n_par > 1 else nullcontext():
        if dtype == np.float32:
            _jvp_blocks[float](V, A, ta, lda, W, tb, ldb, lam, dz, out, Y, rows, n_par)
        else:
            _jvp_blocks[double](V, A, ta, lda, W, tb, ldb, lam, dz, out, Y, rows, n_par)


def _same_array(X, Y):
    """True if ``X`` and ``Y`` are the same view of memory (data pointer, shape, strides)."""
    return (X.shape == Y.shape and X.strides == Y.strides
            and cnp.PyArray_DATA(X) == cnp.PyArray_DATA(Y))


def _jvp_folded_call(V, Wt, lam, dz, out, n_threads):
    B, K, n = V.shape
    V, Wt = np.ascontiguousarray(V), np.ascontiguousarray(Wt)
    lam, dz = np.ascontiguousarray(lam), np.ascontiguousarray(dz)
    n_par = threads_for(n_threads, out.size)
    splits = row_blocks(B, K)
    H = np.empty((n_par, n, n), dtype=out.dtype)
    from kfrtrl.threads import blas_limit

    with blas_limit(1) if n_par > 1 else nullcontext():
        _jvp_folded_dispatch(V, Wt, lam, dz, out, H, n_par, splits)


def _jvp_folded_dispatch(V, Wt, lam, dz, out, H, n_par, splits):
    if out.dtype == np.float32:
        _jvp_folded[float](V, Wt, lam, dz, out, H, n_par, splits)
    else:
        _jvp_folded[double](V, Wt, lam, dz, out, H, n_par, splits)


cdef void _jvp_folded(const floating[:, :, ::1] V, const floating[:, ::1] Wt,
                      const floating[:, :, :, ::1] lam, const floating[:, :, :, ::1] dz,
                      floating[:, :, :] out, floating[:, :, ::1] H, int n_par, int splits) noexcept nogil:
    """out_b = V_b H_bᵀ, H_bᵀ = diag(λ_b) + Wt diag(d_b): one (n, n) matrix and one GEMM per sample
    (per row block of a sample when ``splits`` > 1).

    ``out`` (B, K, n) may have any batch stride (its (K, n) blocks are C-contiguous);
    H (n_par, n, n) holds one H_bᵀ per thread, built just before its GEMM reads it.
    Samples (or row blocks) run in parallel (each GEMM on one BLAS thread: the caller holds
    BLAS at 1) when n_par > 1, else in turn.
    """
    cdef Py_ssize_t c, b, lo, hi
    cdef int K = V.shape[1], n = V.shape[2]
    for c in prange(V.shape[0] * splits, nogil=True, num_threads=n_par, schedule='dynamic'):
        b = c // splits
        lo = (c % splits) * K // splits
        hi = (c % splits + 1) * K // splits
        step_propagate(&V[b, lo, 0], <int> (hi - lo), &Wt[0, 0], n, &lam[b, 0, 0, 0], &dz[b, 0, 0, 0], n, 1,
                       True, &H[threadid(), 0, 0], &out[b, lo, 0])


cdef void _jvp_blocks(const floating[:, :, ::1] V, const floating[:, :] A, char ta, int lda,
                      const floating[:, :] W, char tb, int ldb,
                      const floating[:, :, :, ::1] lam, const floating[:, :, :, ::1] dz,
                      floating[:, :, :] out, floating[:, :, ::1] Y, int block_rows,
                      int n_threads) noexcept nogil:
    """Blocks of ``block_rows`` tangents: Y = A[r0:r1] @ W (one GEMM into the thread's scratch),
    then out = Λ V + D Y row by row; in parallel over the blocks when n_threads > 1."""
    cdef Py_ssize_t K = V.shape[1], S = dz.shape[1], Z = dz.shape[2], n = dz.shape[3]
    cdef Py_ssize_t S_in = lam.shape[2]
    cdef Py_ssize_t BK = V.shape[0] * K, blocks = (BK + block_rows - 1) // block_rows
    cdef Py_ssize_t blk, r0, r1, bk, b, i, j, z, t
    cdef floating *y
    cdef floating *o
    cdef const floating *c
    cdef const floating *v
    for blk in prange(blocks, nogil=True, num_threads=n_threads, schedule='dynamic'):
        r0 = blk * block_rows
        r1 = min(r0 + block_rows, BK)
        y = &Y[threadid(), 0, 0]
        gemm(ta, tb, <int> (r1 - r0), <int> (Z * n), A.shape[1], <floating> 1.0,
             &A[0, 0] + (r0 * lda if ta == c'n' else r0), lda, &W[0, 0], ldb, <floating> 0.0, y, <int> (Z * n))
        for bk in range(r0, r1):
            b = bk // K
            v = &V[b, bk - b * K, 0]
            for i in range(S):
                o = &out[b, bk - b * K, i * n]
                c = &dz[b, i, 0, 0]
                for t in range(n):
                    o[t] = c[t] * y[(bk - r0) * Z * n + t]
                for z in range(1, Z):
                    c = &dz[b, i, z, 0]
                    for t in range(n):
                        o[t] = o[t] + c[t] * y[(bk - r0) * Z * n + z * n + t]
                for j in range(S_in):
                    c = &lam[b, i, j, 0]
                    for t in range(n):
                        o[t] = o[t] + c[t] * v[j * n + t]


def jvp_dense(V, Ht, out, n_threads):
    """``out[b] = V[b] @ Ht[b]``: the formed step Jacobian on a stack of tangents.

    Shapes as :func:`kfrtrl._reference.propagate.jvp_dense`: V (B, K, N), Ht (B, N, N),
    out (B, K, N), written in place when each sample's (K, N) block is C-contiguous (the
    batch stride is free), else through a copy. One BLAS GEMM per sample, cut in row blocks
    when the samples are fewer than the cores (:func:`_batched_gemm`).
    """
    _batched_gemm(0, V, Ht, out, n_threads)


def jvp_state(Ht, G, out, n_threads):
    """``out[b] = Ht[b]ᵀ @ G[b]``: the formed step Jacobian on a state-major influence.

    Shapes as :func:`kfrtrl._reference.propagate.jvp_state`: Ht (B, N, N), G (B, N, P), out
    (B, N, P), written in place when each sample's block is C-contiguous, else through a copy.
    The wide (N, N) @ (N, P) GEMM per sample, cut in column blocks when the samples are fewer
    than the cores (:func:`_batched_gemm`).
    """
    _batched_gemm(1, Ht, G, out, n_threads)


def _batched_gemm(kind, X, Y, out, n_threads):
    """What ``jvp_dense`` (kind 0: out[b] = X[b] @ Y[b], in blocks of X[b]'s rows) and
    ``jvp_state`` (kind 1: out[b] = X[b]ᵀ @ Y[b], in blocks of Y[b]'s columns) share: the
    contiguity, the blocks (:func:`kfrtrl._thresholds.row_blocks`: the same on any thread count,
    so the bits are too) and the threads (in parallel from PARALLEL_MIN_WORK elements on, BLAS
    held at one thread)."""
    if not _has_contiguous_blocks(out):
        target = np.empty(out.shape, dtype=out.dtype)
        _batched_gemm(kind, X, Y, target, n_threads)
        out[...] = target
        return
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    n_par = threads_for(n_threads, out.size)
    splits = row_blocks(out.shape[0], X.shape[1] if kind == 0 else Y.shape[2])
    from kfrtrl.threads import blas_limit

    with blas_limit(1) if n_par > 1 else nullcontext():
        if out.dtype == np.float32:
            _batched[float](kind, X, Y, out, n_par, splits)
        else:
            _batched[double](kind, X, Y, out, n_par, splits)


def _has_contiguous_blocks(X):
    """True if each X[b] of X (B, K, L) is C-contiguous (the batch stride is free)."""
    item, (_, K, L) = X.itemsize, X.shape
    return (L == 1 or X.strides[2] == item) and (K == 1 or X.strides[1] == L * item)


cdef void _batched(int kind, const floating[:, :, ::1] X, const floating[:, :, ::1] Y,
                   floating[:, :, :] out, int n_par, int splits) noexcept nogil:
    """The blocks of :func:`_batched_gemm`, one GEMM each; in parallel when n_par > 1."""
    cdef Py_ssize_t c, b, lo, hi
    cdef int N = X.shape[2], P = Y.shape[2]
    cdef int rows = X.shape[1] if kind == 0 else P
    for c in prange(X.shape[0] * splits, nogil=True, num_threads=n_par, schedule='dynamic'):
        b = c // splits
        lo = (c % splits) * rows // splits
        hi = (c % splits + 1) * rows // splits
        if kind == 0:
            gemm(c'n', c'n', <int> (hi - lo), N, N, <floating> 1.0, &X[b, lo, 0], N, &Y[b, 0, 0], N,
                 <floating> 0.0, &out[b, lo, 0], N)
        else:
            gemm(c't', c'n', N, <int> (hi - lo), N, <floating> 1.0, &X[b, 0, 0], N, &Y[b, 0, lo], P,
                 <floating> 0.0, &out[b, 0, lo], P)


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
    """KF-RTRL's unbiased merge (see :func:`kfrtrl._reference.propagate.kf_combine`).

    HA (B, C, p, N); u (B, C, m); Dt (B, p, N); a (B, m); c1, c2 (B, C) of ±1;
    A_out (B, C, p, N) and u_out (B, C, m) C-contiguous, written (A_out may be HA, u_out u).
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


def kf_fused(A, u, W, lam, dz, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's whole step for a step Jacobian with diagonal blocks (see
    :func:`kfrtrl._reference.propagate.kf_fused`).

    Per sample, ``H_b = diag(lam_b) + Σ_z diag(dz_bz) W[z n:(z+1) n, :n]`` is formed in a
    per-thread scratch and ``A_out[b] = A[b] H_bᵀ`` is one GEMM over the C chains; then,
    while that block is in cache, each chain is merged with the immediate term ``D_b ⊗ a_b``
    in one pass (D_b, the diagonal blocks diag(dz_bz) stacked, is never formed). Samples run in parallel when the
    work allows (each GEMM on one BLAS thread), else in turn with BLAS threading each GEMM.

    Parameters
    ----------
    A : (B, C, p, n) float32 or float64, the factors of C chains (tangent layout), p = Z n.
    u : (B, C, m), same dtype.
    W : (p, m), same dtype, the cell's weight (only ``W[:, :n]`` is read).
    lam : (B, n), same dtype.
    dz : (B, Z, n), or (B, n) when Z = 1, same dtype.
    a : (B, m), same dtype.
    c1, c2 : (B, C), same dtype, signs ±1.
    A_out : (B, C, p, n), same dtype, C-contiguous, not overlapping A; written with
        ``c1 H A / p1 + c2 D / p2``.
    u_out : (B, C, m), same dtype, C-contiguous, may be ``u``; written with
        ``c1 p1 u + c2 p2 a``.
    n_threads : int, the OpenMP threads the kernel may use.

    Norms are accumulated in float64; p = 1 where a norm is zero.
    """
    B, C, p, n = A_out.shape
    dz = dz.reshape(B, p)                      # the Z = p / n diagonal blocks, one row per sample
    A, u, W, lam, dz, a, c1, c2 = (np.ascontiguousarray(x) for x in (A, u, W, lam, dz, a, c1, c2))
    n_par = threads_for(min(n_threads, B), A_out.size)
    H = np.empty((n_par, n, n), dtype=A_out.dtype)
    if n_par > 1:
        from kfrtrl.threads import blas_limit

        with blas_limit(1):
            _kf_fused_dispatch(A, u, W, lam, dz, a, c1, c2, A_out, u_out, H, n_par)
    else:
        _kf_fused_dispatch(A, u, W, lam, dz, a, c1, c2, A_out, u_out, H, n_par)


def _kf_fused_dispatch(A, u, W, lam, dz, a, c1, c2, A_out, u_out, H, n_par):
    """The call for A_out's dtype."""
    if A_out.dtype == np.float32:
        _kf_fused[float](A, u, W, lam, dz, a, c1, c2, A_out, u_out, H, n_par)
    else:
        _kf_fused[double](A, u, W, lam, dz, a, c1, c2, A_out, u_out, H, n_par)


cdef void _kf_fused(const floating[:, :, :, ::1] A, const floating[:, :, ::1] u,
                    const floating[:, ::1] W, const floating[:, ::1] lam,
                    const floating[:, ::1] dz, const floating[:, ::1] a,
                    const floating[:, ::1] c1, const floating[:, ::1] c2,
                    floating[:, :, :, ::1] A_out, floating[:, :, ::1] u_out,
                    floating[:, :, ::1] H, int n_par) noexcept nogil:
    """Per sample: H_b in this thread's scratch, one GEMM, then each chain's merge in cache."""
    cdef Py_ssize_t C = A_out.shape[1], p = A_out.shape[2], n = A_out.shape[3], m = u_out.shape[2], b, c
    cdef double n_d, n_a
    for b in prange(A_out.shape[0], nogil=True, num_threads=n_par, schedule='dynamic'):
        step_propagate(&A[b, 0, 0, 0], <int> (C * p), &W[0, 0], <int> W.shape[1], &lam[b, 0],
                       &dz[b, 0], <int> n, <int> (p // n), False, &H[threadid(), 0, 0],
                       &A_out[b, 0, 0, 0])
        n_d = sqrt(sumsq(&dz[b, 0], p))
        n_a = sqrt(sumsq(&a[b, 0], m))
        for c in range(C):
            _kf_merge_chain(&A_out[b, c, 0, 0], &u[b, c, 0], &dz[b, 0], &a[b, 0], c1[b, c], c2[b, c],
                            n_d, n_a, &u_out[b, c, 0], p, n, m)


cdef inline void _kf_merge_chain(floating *HA, const floating *u, const floating *d,
                                 const floating *a, floating s1, floating s2, double n_d,
                                 double n_a, floating *u_out, Py_ssize_t p, Py_ssize_t n,
                                 Py_ssize_t m) noexcept nogil:
    """One chain's merge in place: HA (p, n) <- s1 HA / p1 + s2 D / p2, u_out <- s1 p1 u + s2 p2 a.

    D (p, n): the diagonal blocks diag(d[z n:(z+1) n]) stacked; n_d = |d|, n_a = |a|;
    u_out may be u (its norm is read first).
    """
    cdef double p1 = _balance(sqrt(sumsq(HA, p * n)), sqrt(sumsq(u, m)))
    cdef double p2 = _balance(n_d, n_a)
    cdef floating f1 = <floating> (s1 / p1), f2 = <floating> (s2 / p2)
    cdef Py_ssize_t i, j
    for i in range(p * n):
        HA[i] = f1 * HA[i]
    for i in range(p):                         # row z n + t of block z: entry (z n + t, t)
        HA[i * n + i % n] = HA[i * n + i % n] + f2 * d[i]
    f1 = <floating> (s1 * p1)
    f2 = <floating> (s2 * p2)
    for j in range(m):
        u_out[j] = f1 * u[j] + f2 * a[j]


def uoro_fused(v, w, w_sq, W, lam, dz, a, nu, n_threads):
    """UORO's whole step in place for an Elman-type cell (see :func:`kfrtrl._reference.propagate.uoro_fused`).

    ``H v`` of the whole batch is one GEMM (``v @ W[:, :n]ᵀ``, then ``lam v + dz ·`` per
    sample), the scalars ρ0, ρ1 come from |w| (``w_sq``), |H v|, |dz| and |a|, and w is
    updated in one pass that also accumulates its new squared norm; the passes are
    parallel over samples and over the B*n rows of w.

    Parameters
    ----------
    v : (B, n) float32 or float64, C-contiguous, updated to ``ρ0 H v + ρ1 ν``.
    w : (B, n, m), same dtype, C-contiguous, updated to ``w / ρ0 + (dz ν) ⊗ a / ρ1``
        (a term with ρ = 0 dropped).
    w_sq : (B,) float64, C-contiguous: |w_b|² on entry, the new |w_b|² on exit.
    W : (n, m), same dtype as v, the cell's weight (only ``W[:, :n]`` is read).
    lam, dz : (B, n), same dtype.
    a : (B, m), same dtype.
    nu : (B, n), same dtype, signs ±1.
    n_threads : int, the OpenMP threads the kernel may use.

    Norms are accumulated in float64. Called once per step: the arguments go straight
    to typed views, and only inputs those refuse (non-contiguous) are copied.
    """
    try:
        _uoro_fused_dispatch(v, w, w_sq, W, lam, dz, a, nu, n_threads)
    except ValueError:                         # a layout the typed views refuse: copy the inputs
        W, lam, dz, a, nu = (np.ascontiguousarray(x) for x in (W, lam, dz, a, nu))
        _uoro_fused_dispatch(v, w, w_sq, W, lam, dz, a, nu, n_threads)


def _uoro_fused_dispatch(v, w, w_sq, W, lam, dz, a, nu, n_threads):
    """Scratch (Y for the GEMM, float64 ``work``) and the call for v's dtype."""
    B, n = v.shape
    Y, work = np.empty((B, n), dtype=v.dtype), np.empty((B, 2 * n + 2))
    n_threads = threads_for(n_threads, w.size)
    if v.dtype == np.float32:
        _uoro_fused[float](v, w, w_sq, W, lam, dz, a, nu, Y, work, n_threads)
    else:
        _uoro_fused[double](v, w, w_sq, W, lam, dz, a, nu, Y, work, n_threads)


cdef void _uoro_fused(floating[:, ::1] v, floating[:, :, ::1] w, double[::1] w_sq,
                      const floating[:, ::1] W, const floating[:, ::1] lam,
                      const floating[:, ::1] dz, const floating[:, ::1] a,
                      const floating[:, ::1] nu, floating[:, ::1] Y, double[:, ::1] work,
                      int n_threads) noexcept nogil:
    """Y = v Wᵀ (one GEMM), then per sample the scalars and v, per row of w its update and |row|².

    work (B, 2n + 2) float64: [0, n) H v, [n, 2n) the new |w_b[i]|², 2n and 2n+1 1/ρ0, 1/ρ1.
    """
    cdef Py_ssize_t B = w.shape[0], n = w.shape[1], m = w.shape[2], b, bi, i
    cdef double rho0, rho1
    gemm(c'n', c't', <int> B, <int> n, <int> n, <floating> 1.0, &v[0, 0], <int> n,
         &W[0, 0], <int> m, <floating> 0.0, &Y[0, 0], <int> n)
    with nogil, parallel(num_threads=n_threads):  # one fork-join, a barrier between the loops
        for b in prange(B, schedule='static'):
            for i in range(n):
                work[b, i] = <double> lam[b, i] * v[b, i] + <double> dz[b, i] * Y[b, i]
            rho0 = _ratio_root(sqrt(w_sq[b]), sqrt(sumsq(&work[b, 0], n)))
            rho1 = _ratio_root(sqrt(sumsq(&dz[b, 0], n) * sumsq(&a[b, 0], m)), sqrt(<double> n))
            for i in range(n):
                v[b, i] = <floating> (rho0 * work[b, i] + rho1 * nu[b, i])
            work[b, 2 * n] = _inverse(rho0)
            work[b, 2 * n + 1] = _inverse(rho1)
        for bi in prange(B * n, schedule='static'):
            b = bi // n
            i = bi - b * n
            work[b, n + i] = _scale_add_sq(&w[b, i, 0], &a[b, 0], <floating> work[b, 2 * n],
                                           <floating> (dz[b, i] * nu[b, i] * <floating> work[b, 2 * n + 1]), m)
        for b in prange(B, schedule='static'):
            w_sq[b] = _sum(&work[b, n], n)


cdef inline double _ratio_root(double num, double den) noexcept nogil:
    """sqrt(num / den) where both are > 0, else 0 (meaning: drop that term)."""
    if num > 0.0 and den > 0.0:
        return sqrt(num / den)
    return 0.0


cdef inline double _inverse(double rho) noexcept nogil:
    """1 / rho, and 0 where rho is 0 (the dropped term)."""
    return 1.0 / rho if rho > 0.0 else 0.0


cdef extern from "propagate.h":
    double kfrtrl_scale_add_sq_d(double *x, const double *y, double s, double t, Py_ssize_t m) noexcept nogil
    double kfrtrl_scale_add_sq_f(float *x, const float *y, float s, float t, Py_ssize_t m) noexcept nogil


cdef inline double _scale_add_sq(floating *x, const floating *y, floating s, floating t,
                                 Py_ssize_t m) noexcept nogil:
    """x <- x s + t y in place, and return Σ x_new² (float64, eight partial sums as ``sumsq``)."""
    if floating is float:
        return kfrtrl_scale_add_sq_f(x, y, s, t, m)
    else:
        return kfrtrl_scale_add_sq_d(x, y, s, t, m)


cdef inline double _sum(const double *x, Py_ssize_t n) noexcept nogil:
    """Σ x_i in order."""
    cdef double total = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        total += x[i]
    return total
