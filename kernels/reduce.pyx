# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OK's optimal unbiased reduction, ``ok_reduce``, in the Cython backend.

Same semantics and argument order as :func:`kfrtrl._reference.kernels.ok_reduce`
(and the same sign convention, zero threshold, m* and Householder
complement), parallel over samples. Per sample, all small factors are in
float64 through ``scipy.linalg.cython_lapack``: Householder QR of both factor
stacks (dgeqrf), SVD of the (r+1)² core (dgesdd), explicit Q only on the small
u side (dorgqr), and the new A-factors as ``Q_V @ T`` applied by dormqr
straight into the output (no explicit Q_V). While samples run in parallel,
BLAS is held at one thread (threaded BLAS inside the parallel loop would
oversubscribe the cores).
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport fabs, sqrt
from libc.string cimport memset
from scipy.linalg.cython_lapack cimport dgeqrf, dgesdd, dormqr, dorgqr

from _blas cimport KFRTRL_OPENMP

from kfrtrl._reference.kernels import SVD_ZERO


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(KFRTRL_OPENMP)


def ok_reduce(V, U, signs, V_out, U_out, n_threads):
    """Reduce r+1 Kronecker terms to r per sample (see the reference).

    V (B, r+1, P); U (B, r+1, m); signs (B, r+1) of ±1; V_out (B, r, P) and
    U_out (B, r, m) C-contiguous, written. V_out may overlap V (V is copied
    per sample before anything is written). Cost per sample O(P (r+1)²) for
    the Householder QR and its application, plus O(m (r+1)² + (r+1)³).
    """
    B, k, P = V.shape
    m = U.shape[2]
    lwork = _lwork(P, m, k)
    size = _workspace(P, m, k, lwork) + (P * (k - 1) if V_out.dtype == np.float32 else 0)
    n_par = max(1, min(int(n_threads), B))
    ws = np.empty((n_par, size), dtype=np.float64)
    iwork = np.empty((n_par, 8 * k), dtype=np.intc)
    args = (np.ascontiguousarray(V), np.ascontiguousarray(U), np.ascontiguousarray(signs),
            V_out, U_out, ws, iwork, lwork, float(SVD_ZERO), n_par)
    if n_par > 1:
        from kfrtrl.threads import _blas_controller

        with _blas_controller().limit(limits=1, user_api="blas"):
            _dispatch(args, V_out.dtype)
    else:
        _dispatch(args, V_out.dtype)


def _dispatch(args, dtype):
    if dtype == np.float32:
        _ok_reduce[float](*args)
    else:
        _ok_reduce[double](*args)


def _workspace(int P, int m, int k, int lwork):
    """Doubles of per-thread workspace needed by :func:`_reduce_one` (without the float32 buffer)."""
    return P * k + 2 * m * k + 3 * k * k + 2 * k * (k - 1) + 7 * k + lwork


cdef int _lwork(int P, int m, int k) noexcept nogil:
    """Largest LAPACK work size (optimal, by workspace query) of the calls in :func:`_reduce_one`."""
    cdef int r = k - 1, qv = min(P, k), qu = min(m, k), q = min(qu, qv), info, query_size = -1
    cdef double query, best = 1.0
    cdef double dummy[1]
    cdef int idummy[1]
    cdef char side = b'L', trans = b'N', jobz = b'S'
    dgeqrf(&P, &k, dummy, &P, dummy, &query, &query_size, &info)
    best = max(best, query)
    dgeqrf(&m, &k, dummy, &m, dummy, &query, &query_size, &info)
    best = max(best, query)
    dorgqr(&m, &qu, &qu, dummy, &m, dummy, &query, &query_size, &info)
    best = max(best, query)
    dormqr(&side, &trans, &P, &r, &qv, dummy, &P, dummy, dummy, &P, &query, &query_size, &info)
    best = max(best, query)
    dgesdd(&jobz, &qu, &qv, dummy, &qu, dummy, dummy, &qu, dummy, &q, &query, &query_size, idummy, &info)
    best = max(best, query)
    return <int> best + 1


cdef void _ok_reduce(const floating[:, :, ::1] V, const floating[:, :, ::1] U,
                     const floating[:, ::1] signs, floating[:, :, ::1] V_out,
                     floating[:, :, ::1] U_out, double[:, ::1] ws, int[:, ::1] iwork,
                     int lwork, double svd_zero, int n_par) noexcept nogil:
    cdef Py_ssize_t b
    cdef int k = V.shape[1], P = V.shape[2], m = U.shape[2]
    for b in prange(V.shape[0], nogil=True, num_threads=n_par, schedule='dynamic'):
        _reduce_one(&V[b, 0, 0], &U[b, 0, 0], &signs[b, 0], k, P, m, &V_out[b, 0, 0],
                    &U_out[b, 0, 0], &ws[threadid(), 0], lwork, &iwork[threadid(), 0], svd_zero)


cdef void _reduce_one(const floating *V, const floating *U, const floating *eps, int k, int P,
                      int m, floating *V_out, floating *U_out, double *ws, int lwork,
                      int *iwork, double svd_zero) noexcept nogil:
    """One sample: V (k, P), U (k, m), eps (k,) -> V_out (k-1, P), U_out (k-1, m).

    Column-major work arrays: Wv (P, k) and Wu (m, k) hold the factors and
    then their QR; core (qu, qv) = R_U R_Vᵀ; its SVD Pm Σ QmT; left = Q_U Pm;
    Cl (q, r), row-major, the coefficients of the new terms on the singular
    pairs, so that new u's = (left F Cl)ᵀ and new A's = (Q_V QmTᵀ F Cl)ᵀ with
    F the sign flips.
    """
    cdef int r = k - 1, qv = min(P, k), qu = min(m, k), q = min(qu, qv), info, i, j, t
    cdef double *Wv = ws
    cdef double *Wu = Wv + P * k
    cdef double *left = Wu + m * k
    cdef double *core = left + m * k
    cdef double *Pm = core + k * k
    cdef double *QmT = Pm + k * k
    cdef double *Cl = QmT + k * k
    cdef double *Tv = Cl + k * r
    cdef double *tauv = Tv + k * r
    cdef double *tauu = tauv + k
    cdef double *s = tauu + k
    cdef double *flip = s + k
    cdef double *scratch = flip + k            # 3k: tail sums and the Householder vector
    cdef double *work = scratch + 3 * k
    cdef double *Z = work + lwork              # (P, r) float64 output buffer (float32 only)
    cdef double acc
    cdef char side = b'L', trans = b'N', jobz = b'S'
    for t in range(P * k):
        Wv[t] = V[t]
    for t in range(m * k):
        Wu[t] = U[t]
    dgeqrf(&P, &k, Wv, &P, tauv, work, &lwork, &info)
    dgeqrf(&m, &k, Wu, &m, tauu, work, &lwork, &info)
    for j in range(qv):                        # core = R_U R_Vᵀ, both upper trapezoidal
        for i in range(qu):
            acc = 0.0
            for t in range(max(i, j), k):
                acc = acc + Wu[i + t * m] * Wv[j + t * P]
            core[i + j * qu] = acc
    dgesdd(&jobz, &qu, &qv, core, &qu, s, Pm, &qu, QmT, &q, work, &lwork, iwork, &info)
    for i in range(q):
        if s[i] < svd_zero * s[0]:
            s[i] = 0.0
    dorgqr(&m, &qu, &qu, Wu, &m, tauu, work, &lwork, &info)
    _left_and_flips(Wu, Pm, m, qu, q, left, flip)
    _coefficients(s, q, r, eps, Cl, scratch)
    for j in range(r):                         # new u's, and T = QmTᵀ F Cl for the A side
        for t in range(m):
            acc = 0.0
            for i in range(q):
                acc = acc + left[t + i * m] * (flip[i] * Cl[i * r + j])
            U_out[j * m + t] = <floating> acc
        for t in range(qv):
            acc = 0.0
            for i in range(q):
                acc = acc + QmT[i + t * q] * (flip[i] * Cl[i * r + j])
            Tv[t + j * qv] = acc
    if floating is double:
        Z = V_out
    memset(Z, 0, P * r * sizeof(double))
    for j in range(r):
        for t in range(qv):
            Z[t + j * P] = Tv[t + j * qv]
    dormqr(&side, &trans, &P, &r, &qv, Wv, &P, tauv, Z, &P, work, &lwork, &info)
    if floating is float:
        for t in range(P * r):
            V_out[t] = <float> Z[t]


cdef void _left_and_flips(const double *Qu, const double *Pm, int m, int qu, int q,
                          double *left, double *flip) noexcept nogil:
    """left = Q_U Pm (m, q), and flip[j] = sign of left's largest-|entry| in column j (0 -> +1)."""
    cdef int i, j, t, idx
    cdef double acc, best
    for j in range(q):
        idx = 0
        best = -1.0
        for t in range(m):
            acc = 0.0
            for i in range(qu):
                acc = acc + Qu[t + i * m] * Pm[i + j * qu]
            left[t + j * m] = acc
            if fabs(acc) > best:
                best = fabs(acc)
                idx = t
        flip[j] = -1.0 if left[idx + j * m] < 0.0 else 1.0


cdef void _coefficients(const double *s, int q, int r, const floating *eps, double *Cl,
                        double *scratch) noexcept nogil:
    """Cl (q, r) row-major: √σ on the kept pairs, sqrt(S/(kk-1)) E B on the mixed ones."""
    cdef int i, m_star
    cdef double S = 0.0
    memset(Cl, 0, q * r * sizeof(double))
    if q <= r:                                 # rank <= r: keep everything exactly
        for i in range(q):
            Cl[i * r + i] = sqrt(s[i])
        return
    m_star = _n_kept(s, r, scratch)
    for i in range(m_star):
        Cl[i * r + i] = sqrt(s[i])
    for i in range(m_star, r + 1):
        S = S + s[i]
    if S > 0.0:
        _mix(s + m_star, r + 1 - m_star, S, eps, Cl + m_star * r + m_star, r, scratch)


cdef int _n_kept(const double *s, int r, double *tail) noexcept nogil:
    """Smallest m with (r - m) σ_{m+1} <= Σ_{i>m} σ_i (tail sums from the end, as the reference)."""
    cdef int i
    tail[r] = s[r]
    for i in range(r - 1, -1, -1):
        tail[i] = tail[i + 1] + s[i]
    for i in range(r + 1):
        if (r - i) * s[i] <= tail[i]:
            return i
    return r


cdef void _mix(const double *sig, int kk, double S, const floating *eps, double *Cl, int ld,
               double *w) noexcept nogil:
    """Cl[a, c] (row stride ld) = sqrt(S/(kk-1)) ε_a H[a, c+1]: H the Householder reflection
    whose first column is v0 = sqrt(1 - (kk-1) σ / S), so H[:, 1:] spans v0⊥."""
    cdef int a, c
    cdef double st, nrm = 0.0, ww = 0.0, scale = sqrt(S / (kk - 1)), h
    for a in range(kk):
        st = min(max((kk - 1) * sig[a] / S, 0.0), 1.0)
        w[a] = sqrt(1.0 - st)
        nrm = nrm + w[a] * w[a]
    nrm = sqrt(nrm)
    for a in range(kk):
        w[a] = w[a] / nrm
    w[0] = w[0] + (1.0 if w[0] >= 0.0 else -1.0)
    for a in range(kk):
        ww = ww + w[a] * w[a]
    for a in range(kk):
        for c in range(1, kk):
            h = (1.0 if a == c else 0.0) - (2.0 / ww) * (w[a] * w[c])
            Cl[a * ld + c - 1] = scale * eps[a] * h
