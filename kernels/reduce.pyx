# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OK's optimal unbiased reduction, ``ok_reduce``, in the Cython backend.

Same semantics and argument order as :func:`kfrtrl._reference.kernels.ok_reduce`
(the same sign convention, zero threshold, m* and Householder complement),
parallel over samples, all small factors in float64. Two routes per sample,
equal in exact arithmetic:

- Gram (BLAS-3, the usual one): ``G = V Vᵀ`` by one GEMM, the triangular
  factor R of the QR ``Vᵀ = Q R`` by Cholesky of the unit-diagonal scaling of
  G (so only the conditioning of the row-normalised factors matters), Q never
  formed: the new A's are one GEMM ``V_out = Tᵀ V`` with ``T = R⁻¹ (...)``
  small. The same for U. Two passes over the long A side in all.
  Terms with a zero factor (right after a reset) are dropped first.
- Householder (the reference's): when a Cholesky pivot of a scaled Gram
  matrix is below :data:`MIN_PIVOT` (nearly dependent terms) or there are
  more nonzero terms than rows (m or P): dgeqrf on both stacks, the new A's
  applied by dormqr as ``Q_V T``.

LAPACK and BLAS come from ``scipy.linalg.cython_lapack``/``cython_blas``.
From PARALLEL_MIN_WORK elements on (where samples may run in parallel, or
BLAS would thread its per-sample calls) BLAS is held at one thread for the
call: threaded BLAS inside the parallel loop oversubscribes the cores, and
on these skinny per-sample products it costs more than it gains (measured
10-20x slower on a loaded 2-core machine).
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport fabs, sqrt
from libc.string cimport memset
from scipy.linalg.cython_lapack cimport dgeqrf, dgesdd, dormqr, dorgqr

from _blas cimport KFRTRL_OPENMP, PARALLEL_MIN_WORK, gemm, threads_for

from kfrtrl._reference.kernels import SVD_ZERO

# Smallest Cholesky pivot of a unit-diagonal Gram matrix that the Gram route
# accepts (the sine of the angle between a term and the span of the earlier
# ones). Below it the sample goes the Householder way, which keeps every
# sample within ~1e-12 relative of the reference.
MIN_PIVOT = 1e-2


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(KFRTRL_OPENMP)


def ok_reduce(V, U, signs, V_out, U_out, n_threads):
    """Reduce r+1 Kronecker terms to r per sample (see the reference).

    V (B, r+1, P); U (B, r+1, m); signs (B, r+1) of ±1; V_out (B, r, P) and
    U_out (B, r, m) C-contiguous, written, not overlapping V or U.
    Cost per sample: Gram route ~(r+1)² P + r (r+1) P multiply-adds (two
    GEMMs) plus O(m (r+1)² + (r+1)³); Householder route ~3 (r+1)² P in BLAS-2.
    """
    B, k, P = V.shape
    m = U.shape[2]
    lwork = _lwork(P, m, k)
    size = _workspace(P, m, k, lwork) + (P * (k - 1) if V_out.dtype == np.float32 else 0)
    n_par = threads_for(min(n_threads, B), V.size)
    ws = np.empty((n_par, size), dtype=np.float64)
    iwork = np.empty((n_par, 9 * k), dtype=np.intc)
    V, U, signs = np.ascontiguousarray(V), np.ascontiguousarray(U), np.ascontiguousarray(signs)
    if V.size >= PARALLEL_MIN_WORK:
        from kfrtrl.threads import blas_limit

        with blas_limit(1):
            _run(V, U, signs, V_out, U_out, ws, iwork, lwork, n_par)
    else:
        _run(V, U, signs, V_out, U_out, ws, iwork, lwork, n_par)


def _run(V, U, signs, V_out, U_out, ws, iwork, lwork, n_par):
    if V_out.dtype == np.float32:
        _ok_reduce[float](V, U, signs, V_out, U_out, ws, iwork, lwork, SVD_ZERO, MIN_PIVOT, n_par)
    else:
        _ok_reduce[double](V, U, signs, V_out, U_out, ws, iwork, lwork, SVD_ZERO, MIN_PIVOT, n_par)


def _workspace(int P, int m, int k, int lwork):
    """Doubles of per-thread workspace of :func:`_reduce_one` (without the float32 output buffer)."""
    return P * k + 2 * m * k + 7 * k * k + 3 * k * (k - 1) + 9 * k + lwork


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
                     int lwork, double svd_zero, double min_pivot, int n_par) noexcept nogil:
    cdef Py_ssize_t b
    cdef int k = V.shape[1], P = V.shape[2], m = U.shape[2]
    for b in prange(V.shape[0], nogil=True, num_threads=n_par, schedule='dynamic'):
        _reduce_one(&V[b, 0, 0], &U[b, 0, 0], &signs[b, 0], k, P, m, &V_out[b, 0, 0],
                    &U_out[b, 0, 0], &ws[threadid(), 0], lwork, &iwork[threadid(), 0],
                    svd_zero, min_pivot)


cdef void _reduce_one(const floating *V, const floating *U, const floating *eps, int k, int P,
                      int m, floating *V_out, floating *U_out, double *ws, int lwork,
                      int *iwork, double svd_zero, double min_pivot) noexcept nogil:
    """One sample: V (k, P), U (k, m), eps (k,) -> V_out (k-1, P), U_out (k-1, m).

    Work arrays are column-major unless said otherwise. Wv (P, k), Wu (m, k)
    hold float64 copies of the factors (Wv only where needed); core = R_U R_Vᵀ
    and its SVD Pm Σ QmT; left (m, q) the unit u-directions; Cl (q, r),
    row-major, the coefficients of the new terms on the singular pairs, so
    that new u's = (left F Cl)ᵀ and new A's = (Q_V QmTᵀ F Cl)ᵀ, F the sign flips.
    """
    cdef int r = k - 1, t
    cdef double *Wv = ws
    cdef double *Wu = Wv + P * k
    cdef double *left = Wu + m * k
    cdef double *core = left + m * k
    cdef double *Pm = core + k * k
    cdef double *QmT = Pm + k * k
    cdef double *Rv = QmT + k * k              # Gram route: G_V, then R_V (row-major)
    cdef double *Ru = Rv + k * k               # Gram route: G_U, then R_U (row-major)
    cdef double *Lu = Ru + k * k               # Gram route: R_U⁻¹ Pm
    cdef double *Cl = Lu + k * k
    cdef double *Tv = Cl + k * r
    cdef double *Tk = Tv + k * r               # Gram route: T scattered over all k terms
    cdef double *tauv = Tk + k * r
    cdef double *tauu = tauv + k
    cdef double *s = tauu + k
    cdef double *flip = s + k
    cdef double *scale = flip + k              # 2k: row norms of V and U (Gram route)
    cdef double *scratch = scale + 2 * k       # 3k: tail sums and the Householder vector
    cdef double *work = scratch + 3 * k
    cdef double *Z = work + lwork              # (r, P) float64 output buffer (float32 only)
    cdef int *idx = iwork + 8 * k              # Gram route: the active terms
    cdef const double *src
    if floating is double:
        src = V
        Z = V_out
    else:
        for t in range(P * k):
            Wv[t] = V[t]
        src = Wv
    for t in range(m * k):
        Wu[t] = U[t]
    if not _gram_route(src, Wu, eps, k, P, m, U_out, Z, Rv, Ru, Lu, core, Pm, QmT, left, Cl,
                       Tv, Tk, s, flip, scale, scratch, work, lwork, iwork, idx, svd_zero,
                       min_pivot):
        for t in range(P * k):
            Wv[t] = V[t]
        for t in range(m * k):
            Wu[t] = U[t]
        _householder_route(Wv, Wu, eps, k, P, m, U_out, Z, core, Pm, QmT, left, Cl, Tv,
                           tauv, tauu, s, flip, scratch, work, lwork, iwork, svd_zero)
    if floating is float:
        for t in range(P * r):
            V_out[t] = <float> Z[t]


cdef bint _gram_route(const double *V, double *Wu, const floating *eps, int k, int P, int m,
                      floating *U_out, double *Z, double *Rv, double *Ru, double *Lu,
                      double *core, double *Pm, double *QmT, double *left, double *Cl,
                      double *Tv, double *Tk, double *s, double *flip, double *scale,
                      double *scratch, double *work, int lwork, int *iwork, int *idx,
                      double svd_zero, double min_pivot) noexcept nogil:
    """The Gram route; False (outputs untouched, Wu scrambled) when it does not apply.

    Terms whose A or u factor is exactly zero (right after a reset) are
    dropped: they add nothing to the sum, and the reference gives their zero
    singular values no weight. The singular values are padded with zeros to
    the reference's count min(r+1, m, P), so that m* and the branch agree.
    """
    cdef int r = k - 1, q = min(k, min(m, P)), ka = 0, info, i, j, t
    cdef char jobz = b'S'
    gemm(c'n', c't', k, k, P, 1.0, V, P, V, P, 0.0, Rv, k)
    gemm(c'n', c't', k, k, m, 1.0, Wu, m, Wu, m, 0.0, Ru, k)
    for i in range(k):
        if Rv[i * k + i] > 0.0 and Ru[i * k + i] > 0.0:
            idx[ka] = i
            ka = ka + 1
    if ka > m or ka > P:
        return False
    if ka == 0:
        memset(Z, 0, P * r * sizeof(double))
        for t in range(m * r):
            U_out[t] = 0.0
        return True
    _compact(Rv, k, idx, ka)
    _compact(Ru, k, idx, ka)
    for i in range(ka):                        # Wu's columns -> the active u's
        for t in range(m):
            Wu[t + i * m] = Wu[t + idx[i] * m]
    if not (_scaled_cholesky(Rv, ka, scale, min_pivot) and _scaled_cholesky(Ru, ka, scale + k, min_pivot)):
        return False
    for j in range(ka):                        # core = R_U R_Vᵀ
        for i in range(ka):
            core[i + j * ka] = 0.0
            for t in range(max(i, j), ka):
                core[i + j * ka] += Ru[i * ka + t] * Rv[j * ka + t]
    dgesdd(&jobz, &ka, &ka, core, &ka, s, Pm, &ka, QmT, &ka, work, &lwork, iwork, &info)
    if info != 0:
        return False
    for i in range(ka, q):
        s[i] = 0.0
    for j in range(ka):                        # Lu = R_U⁻¹ Pm, so left = Uᵀ Lu
        _solve_upper(Ru, ka, Pm + j * ka, Lu + j * ka)
    _finish(Wu, Lu, s, eps, ka, q, ka, ka, m, r, U_out, QmT, left, Cl, Tv, flip, scratch, svd_zero)
    memset(Tk, 0, k * r * sizeof(double))
    for j in range(r):                         # T = R_V⁻¹ QmTᵀ F Cl, on the active terms
        _solve_upper(Rv, ka, Tv + j * ka, Tv + j * ka)
        for i in range(ka):
            Tk[idx[i] + j * k] = Tv[i + j * ka]
    gemm(c'n', c'n', r, P, k, 1.0, Tk, k, V, P, 0.0, Z, P)   # V_out = Tᵀ V
    return True


cdef void _compact(double *G, int k, const int *idx, int ka) noexcept nogil:
    """G (k, k) row-major -> its (ka, ka) submatrix on rows/columns idx, packed in place."""
    cdef int a, b
    for a in range(ka):                        # idx is increasing: reads never trail writes
        for b in range(ka):
            G[a * ka + b] = G[idx[a] * k + idx[b]]


cdef bint _scaled_cholesky(double *G, int k, double *d, double min_pivot) noexcept nogil:
    """G (k, k) row-major, symmetric -> R (upper, row-major) with G = Rᵀ R, in place.

    Cholesky of the unit-diagonal D⁻¹ G D⁻¹ (D = diag √G_ii), then R = R_s D.
    False when a diagonal entry is not positive or a pivot of R_s is below min_pivot.
    """
    cdef int i, j, l
    cdef double acc
    for i in range(k):
        if not G[i * k + i] > 0.0:
            return False
        d[i] = sqrt(G[i * k + i])
    for j in range(k):
        acc = 1.0
        for l in range(j):
            acc -= G[l * k + j] * G[l * k + j]
        if not acc >= min_pivot * min_pivot:
            return False
        G[j * k + j] = sqrt(acc)
        for i in range(j + 1, k):
            acc = G[j * k + i] / (d[j] * d[i])
            for l in range(j):
                acc -= G[l * k + j] * G[l * k + i]
            G[j * k + i] = acc / G[j * k + j]
    for j in range(k):
        for i in range(j + 1):
            G[i * k + j] *= d[j]
    return True


cdef void _solve_upper(const double *R, int k, const double *y, double *x) noexcept nogil:
    """x = R⁻¹ y for R (k, k) upper triangular, row-major; x may be y."""
    cdef int i, l
    cdef double acc
    for i in range(k - 1, -1, -1):
        acc = y[i]
        for l in range(i + 1, k):
            acc -= R[i * k + l] * x[l]
        x[i] = acc / R[i * k + i]


cdef void _householder_route(double *Wv, double *Wu, const floating *eps, int k, int P, int m,
                             floating *U_out, double *Z, double *core, double *Pm, double *QmT,
                             double *left, double *Cl, double *Tv, double *tauv, double *tauu,
                             double *s, double *flip, double *scratch, double *work, int lwork,
                             int *iwork, double svd_zero) noexcept nogil:
    """The reference's route: Householder QR of Wv (P, k) and Wu (m, k) (both overwritten)."""
    cdef int r = k - 1, qv = min(P, k), qu = min(m, k), q = min(qu, qv), info, i, j, t
    cdef char side = b'L', trans = b'N', jobz = b'S'
    dgeqrf(&P, &k, Wv, &P, tauv, work, &lwork, &info)
    dgeqrf(&m, &k, Wu, &m, tauu, work, &lwork, &info)
    for j in range(qv):                        # core = R_U R_Vᵀ, both upper trapezoidal
        for i in range(qu):
            core[i + j * qu] = 0.0
            for t in range(max(i, j), k):
                core[i + j * qu] += Wu[i + t * m] * Wv[j + t * P]
    dgesdd(&jobz, &qu, &qv, core, &qu, s, Pm, &qu, QmT, &q, work, &lwork, iwork, &info)
    dorgqr(&m, &qu, &qu, Wu, &m, tauu, work, &lwork, &info)
    _finish(Wu, Pm, s, eps, q, q, qu, qv, m, r, U_out, QmT, left, Cl, Tv, flip, scratch, svd_zero)
    memset(Z, 0, P * r * sizeof(double))       # V_out = (Q_V [T; 0])ᵀ
    for j in range(r):
        for t in range(qv):
            Z[t + j * P] = Tv[t + j * qv]
    dormqr(&side, &trans, &P, &r, &qv, Wv, &P, tauv, Z, &P, work, &lwork, &info)


cdef void _finish(const double *Bu, const double *Cu, double *s, const floating *eps, int nsv,
                  int q, int qu, int qv, int m, int r, floating *U_out, const double *QmT,
                  double *left, double *Cl, double *Tv, double *flip, double *scratch,
                  double svd_zero) noexcept nogil:
    """Shared by both routes, from the SVD on: the reference's steps in the small space.

    nsv singular pairs, s padded with zeros to the reference's count q (>= nsv);
    left = Bu Cu (Bu (m, qu), Cu (qu, nsv)); zero the σ below svd_zero σ_1;
    sign flips; Cl (q, r); writes U_out (r, m) and Tv (qv, r) = QmTᵀ F Cl
    (QmT (nsv, qv)). Pairs past nsv have σ = 0 and so no weight.
    """
    cdef int i, j, t
    cdef double acc
    for i in range(nsv):
        if s[i] < svd_zero * s[0]:
            s[i] = 0.0
    _left_and_flips(Bu, Cu, m, qu, nsv, left, flip)
    _coefficients(s, q, r, eps, Cl, scratch)
    for j in range(r):
        for t in range(m):
            acc = 0.0
            for i in range(nsv):
                acc = acc + left[t + i * m] * (flip[i] * Cl[i * r + j])
            U_out[j * m + t] = <floating> acc
        for t in range(qv):
            acc = 0.0
            for i in range(nsv):
                acc = acc + QmT[i + t * nsv] * (flip[i] * Cl[i * r + j])
            Tv[t + j * qv] = acc


cdef void _left_and_flips(const double *Qu, const double *Pm, int m, int qu, int q,
                          double *left, double *flip) noexcept nogil:
    """left = Qu Pm (m, q), and flip[j] = sign of left's largest-|entry| in column j (0 -> +1)."""
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
