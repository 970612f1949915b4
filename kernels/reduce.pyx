# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OK's optimal unbiased reduction, ``ok_reduce``, and OK's fused Elman-type step,
``ok_fused``, in the Cython backend.

Same semantics and argument order as :func:`kfrtrl._reference.reduce.ok_reduce`
(the same sign convention, zero threshold, m* and Householder complement),
parallel over samples, all small factors in float64. Two routes per sample,
equal in exact arithmetic:

- Gram (the usual one): ``G = V Vᵀ`` (:c:func:`kfrtrl_gram`), the triangular
  factor R of the QR ``Vᵀ = Q R`` by Cholesky of the unit-diagonal scaling of
  G (so only the conditioning of the row-normalised factors matters), Q never
  formed: the new A's are ``V_out = Tᵀ V`` (:c:func:`kfrtrl_combine`) with
  ``T = R⁻¹ (...)`` small. Two passes over the long A side in all, both
  register-tiled C loops. The short u side (m rows) is Householder-factored
  (dgeqrf), as in the reference: repeated inputs make the u's nearly dependent.
  Terms with a zero factor (right after a reset) are dropped first.
- Householder (the reference's): when a Cholesky pivot of the scaled A-side Gram
  matrix is below ``kfrtrl._thresholds.MIN_PIVOT`` (exactly or nearly dependent A
  factors) or there are more nonzero terms than rows (m or P): dgeqrf on both
  stacks, the new A's applied by dormqr as ``Q_V T``.

``ok_fused`` feeds the same per-sample code (:func:`_gram_coefficients`,
:func:`_householder_route`) from the propagated terms ``H A_i`` in a thread
workspace, its Gram matrix extended by the diagonal immediate term from
diagonals only (see :func:`ok_fused`).

LAPACK and BLAS come from ``scipy.linalg.cython_lapack``/``cython_blas``.
In ``ok_reduce``, from PARALLEL_MIN_WORK elements on (where samples may run
in parallel, or BLAS would thread its per-sample calls) BLAS is held at one
thread for the call: threaded BLAS inside the parallel loop oversubscribes
the cores, and on these skinny per-sample products it costs more than it
gains (see docs/performance.md). ``ok_fused``
holds it at one thread when samples run in parallel, as ``kf_fused`` does
(its per-sample (r n, n) @ (n, n) product is not skinny).
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport fabs, sqrt
from libc.string cimport memcpy, memset
from scipy.linalg.cython_lapack cimport dgeqrf, dgesdd, dormqr, dorgqr

from _blas cimport KFRTRL_OPENMP, gemm, step_matrix, sumsq

from kfrtrl import _thresholds
from kfrtrl._thresholds import threads_for


cdef extern from "reduce.h":
    void kfrtrl_gram(const double *X, int k, Py_ssize_t L, double *G, int ldg) noexcept nogil
    void kfrtrl_rows_dot(const double *X, int rows, Py_ssize_t L, const double *c, double *out) noexcept nogil
    void kfrtrl_rows_dot_f(const float *X, int rows, Py_ssize_t L, const float *c, double *out) noexcept nogil
    void kfrtrl_combine(const double *C, int ldc, int rows, int inner, const double *X, Py_ssize_t L,
                        double *O) noexcept nogil


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(KFRTRL_OPENMP)


def ok_reduce(V, U, signs, V_out, U_out, n_threads):
    """Reduce r+1 Kronecker terms to r per sample (see the reference).

    V (B, r+1, P); U (B, r+1, m); signs (B, r+1) of ±1; V_out (B, r, P) and
    U_out (B, r, m) C-contiguous, written, not overlapping V or U.
    Cost per sample: Gram route ~(r+1)² P + r (r+1) P multiply-adds (two
    passes over V) plus O(m (r+1)² + (r+1)³); Householder route ~3 (r+1)² P in BLAS-2.
    """
    B, k, P = V.shape
    m = U.shape[2]
    n_par = threads_for(min(n_threads, B), V.size)
    ws, iwork, lwork = _scratch(P, m, k, V_out.dtype, n_par)
    V, U, signs = np.ascontiguousarray(V), np.ascontiguousarray(U), np.ascontiguousarray(signs)
    if V.size >= _thresholds.PARALLEL_MIN_WORK:
        from kfrtrl.threads import blas_limit

        with blas_limit(1):
            _run(V, U, signs, V_out, U_out, ws, iwork, lwork, n_par)
    else:
        _run(V, U, signs, V_out, U_out, ws, iwork, lwork, n_par)


def _run(V, U, signs, V_out, U_out, ws, iwork, lwork, n_par):
    zero, pivot = _thresholds.SVD_ZERO, _thresholds.MIN_PIVOT
    if V_out.dtype == np.float32:
        _ok_reduce[float](V, U, signs, V_out, U_out, ws, iwork, lwork, zero, pivot, n_par)
    else:
        _ok_reduce[double](V, U, signs, V_out, U_out, ws, iwork, lwork, zero, pivot, n_par)


def ok_fused(A, C, dzp, u, W, lam, dz, a, signs, c, u_out, Fc, n_threads):
    """OK's whole step for a step Jacobian with diagonal blocks (the Elman cell, the RHN of
    depth 1), on the deferred factors ``F_i = Σ_{j<r} C_ij A_j + C_ir D(dzp)`` (see
    :func:`kfrtrl._reference.reduce.ok_fused`), updated in place.

    Per sample, in one thread's workspace: ``H_b = diag(lam_b) + Σ_z diag(dz_bz) W_z``
    formed in a scratch; then in blocks of rows (the same rows of every term,
    ``kfrtrl._thresholds.ok_block_rows``), each in cache: the factors ``F = C A`` (one GEMM,
    plus ``C_r dzp`` on the diagonals), the terms ``S = F H_bᵀ`` (a second GEMM), their Gram
    matrix accumulated in float64 (:c:func:`kfrtrl_gram`), extended by the immediate term
    ``D_b ⊗ a_b`` from diagonals only (``G[i, r] += Σ S_i[z n + t, t] dz_zt``), and S written
    over A, its products with c kept (r p numbers). Then the same coefficients as
    :func:`ok_reduce`'s Gram route become the new C (the recombination waits for the next
    step's first GEMM), dzp = dz, and Fc = C (S c) + C_r (D c). A sample the Gram
    route declines (nearly dependent terms, or more terms than n² or m) takes
    :func:`ok_reduce`'s Householder route and gets its factors recombined (C = [I 0]). A sample
    whose u's are all zero (right after a reset) skips the propagation: its terms weigh nothing.
    Samples run in parallel (each GEMM on one BLAS thread) when the work allows, else in
    turn with BLAS threading each GEMM.

    Parameters
    ----------
    A : (B, r, p, n) float32 or float64, C-contiguous, the stored terms (tangent layout),
        p = Z n; updated in place.
    C : (B, r, r+1), same dtype, C-contiguous, the coefficients; updated in place.
    dzp : (B, Z, n), same dtype, C-contiguous, the deferred diagonal term; updated in place.
    u : (B, r, m), same dtype.
    W : (p, m), same dtype, the cell's weight (only ``W[:, :n]`` is read).
    lam : (B, n), same dtype.
    dz : (B, Z, n), or (B, n) when Z = 1, same dtype: the diagonal blocks of D_b.
    a : (B, m), same dtype.
    signs : (B, r+1), same dtype, the mixing signs ±1.
    c : (B, n), same dtype, or None: the gradient's state cotangent, when known before the step.
    u_out : (B, r, m), same dtype, C-contiguous, not overlapping the inputs; written.
    Fc : (B, r, p), same dtype, C-contiguous, written when c is given: the new factors times c.
    n_threads : int, the OpenMP threads the kernel may use.

    Cost per sample: ~r n³ Z multiply-adds for the propagation, r² n² Z for the factors,
    ~r² n² Z / 2 for the Gram matrix, plus O(m r² + r³); one read and one write of A.
    """
    B, r, p, n = A.shape
    m = u_out.shape[2]
    if not (A.flags.c_contiguous and C.flags.c_contiguous and dzp.flags.c_contiguous):
        raise ValueError("ok_fused: A, C and dzp must be C-contiguous (they are updated in place)")
    dz = dz.reshape(B, p)                      # the Z = p / n diagonal blocks, one row per sample
    u, W, lam, dz, a, signs = (np.ascontiguousarray(x) for x in (u, W, lam, dz, a, signs))
    rows = _thresholds.ok_block_rows(r, p, n)
    n_par = threads_for(min(n_threads, B), A.size)
    ws, iwork, lwork = _scratch(p * n, m, r + 1, A.dtype, n_par)
    H = np.empty((n_par, n, n), dtype=A.dtype)
    FS = np.empty((n_par, 2 * r * rows * n), dtype=A.dtype)
    Sc = np.empty((n_par, r * p))
    products = c is not None
    if products:
        c = np.ascontiguousarray(c)
    else:                                      # nothing to compute: empty stand-ins of the right types
        c, Fc = np.empty((B, 1), A.dtype), np.empty((B, 1, 1), A.dtype)
    args = (A, C, dzp.reshape(B, p), u, W, lam, dz, a, signs, u_out, products, c, Fc, H, FS, Sc, ws, iwork,
            lwork, rows, _thresholds.SVD_ZERO, _thresholds.MIN_PIVOT, n_par)
    if n_par > 1:
        from kfrtrl.threads import blas_limit

        with blas_limit(1):
            _ok_fused_dispatch(*args)
    else:
        _ok_fused_dispatch(*args)


def _ok_fused_dispatch(A, *args):
    """The call for A's dtype."""
    if A.dtype == np.float32:
        _ok_fused[float](A, *args)
    else:
        _ok_fused[double](A, *args)


def _scratch(P, m, k, dtype, n_par):
    """Per-thread workspaces of :func:`_reduce_one`/:func:`_fused_one`: (ws, iwork, lwork)."""
    lwork = _lwork(P, m, k)
    size = _workspace(P, m, k, lwork) + (P * (k - 1) if dtype == np.float32 else 0)
    return np.empty((n_par, size), dtype=np.float64), np.empty((n_par, 9 * k), dtype=np.intc), lwork


def _workspace(int P, int m, int k, int lwork):
    """Doubles of per-thread workspace of :func:`_carve` (without the float32 output buffer Z)."""
    return P * k + 2 * m * k + 5 * k * k + 3 * k * (k - 1) + 8 * k + lwork


cdef int _lwork(int P, int m, int k) noexcept nogil:
    """Largest LAPACK work size (optimal, by workspace query) of the calls of one sample's reduction."""
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


cdef struct Work:
    # One sample's reduction workspace, carved from a thread's float64 block by _carve.
    # Column-major unless said otherwise.
    double *Wv        # (P, k): the A factors in float64 (where needed); row-major (k, P) alike
    double *Wu        # (m, k): the u factors in float64
    double *left      # (m, q): the unit u-directions
    double *core      # R_U R_Vᵀ, then its SVD Pm Σ QmT
    double *Pm
    double *QmT
    double *Rv        # Gram route: G_V, then R_V (row-major)
    double *Cl        # (q, r) row-major: the new terms' coefficients on the singular pairs
    double *Tv
    double *Tk        # Gram route: (r, k) row-major, V_out = Tk V
    double *tauv
    double *tauu
    double *s
    double *flip
    double *scale     # k: row norms of V (Gram route)
    double *scratch   # 3k: tail sums and the Householder vector
    double *work      # lwork: LAPACK's
    double *Z         # (r, P) float64 output buffer (float32 outputs only)
    int *iwork        # 8k: dgesdd's
    int *idx          # k: the active terms (Gram route)
    int lwork


cdef Work _carve(double *ws, int *iwork, int P, int m, int k, int lwork) noexcept nogil:
    """The pointers of :class:`Work` into ws (:func:`_workspace` doubles, plus r P for Z) and iwork (9k ints)."""
    cdef Work w
    cdef int r = k - 1
    w.Wv = ws
    w.Wu = w.Wv + P * k
    w.left = w.Wu + m * k
    w.core = w.left + m * k
    w.Pm = w.core + k * k
    w.QmT = w.Pm + k * k
    w.Rv = w.QmT + k * k
    w.Cl = w.Rv + k * k
    w.Tv = w.Cl + k * r
    w.Tk = w.Tv + k * r
    w.tauv = w.Tk + k * r
    w.tauu = w.tauv + k
    w.s = w.tauu + k
    w.flip = w.s + k
    w.scale = w.flip + k
    w.scratch = w.scale + k
    w.work = w.scratch + 3 * k
    w.Z = w.work + lwork
    w.iwork = iwork
    w.idx = iwork + 8 * k
    w.lwork = lwork
    return w


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

    Gram route: G_V = V Vᵀ, the coefficients (:func:`_gram_coefficients`),
    V_out = Tk V; else the Householder route on float64 copies.
    """
    cdef int r = k - 1
    cdef Work w = _carve(ws, iwork, P, m, k, lwork)
    cdef const double *src
    cdef double *Z
    if floating is double:
        src = V
        Z = V_out
    else:
        _widen(V, P * k, w.Wv)
        src = w.Wv
        Z = w.Z
    _widen(U, m * k, w.Wu)
    kfrtrl_gram(src, k, P, w.Rv, k)
    if _gram_coefficients(eps, k, P, m, U_out, &w, svd_zero, min_pivot):
        kfrtrl_combine(w.Tk, k, r, k, src, P, Z)
    else:
        _widen(V, P * k, w.Wv)
        _widen(U, m * k, w.Wu)
        _householder_route(eps, k, P, m, U_out, Z, &w, svd_zero)
    if floating is float:
        _narrow(Z, P * r, V_out)


cdef void _ok_fused(floating[:, :, :, ::1] A, floating[:, :, ::1] C, floating[:, ::1] dzp,
                    const floating[:, :, ::1] u, const floating[:, ::1] W, const floating[:, ::1] lam,
                    const floating[:, ::1] dz, const floating[:, ::1] a,
                    const floating[:, ::1] signs, floating[:, :, ::1] u_out, bint products,
                    const floating[:, ::1] c, floating[:, :, ::1] Fc,
                    floating[:, :, ::1] H, floating[:, ::1] FS, double[:, ::1] Sc, double[:, ::1] ws,
                    int[:, ::1] iwork, int lwork, int rows, double svd_zero, double min_pivot,
                    int n_par) noexcept nogil:
    cdef Py_ssize_t b
    cdef int r = A.shape[1], n = A.shape[3], m = u_out.shape[2]
    cdef int nz = A.shape[2] // n
    for b in prange(A.shape[0], nogil=True, num_threads=n_par, schedule='dynamic'):
        _fused_one(&A[b, 0, 0, 0], &C[b, 0, 0], &dzp[b, 0], &u[b, 0, 0], &W[0, 0], <int> W.shape[1],
                   &lam[b, 0], &dz[b, 0], &a[b, 0], &signs[b, 0], r, n, nz, m, rows, &u_out[b, 0, 0],
                   &c[b, 0] if products else NULL, &Fc[b, 0, 0] if products else NULL,
                   &H[threadid(), 0, 0], &FS[threadid(), 0], &Sc[threadid(), 0], &ws[threadid(), 0], lwork,
                   &iwork[threadid(), 0], svd_zero, min_pivot)


cdef void _fused_one(floating *A, floating *C, floating *dzp, const floating *u, const floating *W,
                     int ldw, const floating *lam, const floating *dz, const floating *a,
                     const floating *eps, int r, int n, int nz, int m, int rows, floating *u_out,
                     const floating *c, floating *Fc, floating *H, floating *FS, double *Sc, double *ws,
                     int lwork, int *iwork, double svd_zero, double min_pivot) noexcept nogil:
    """One sample of :func:`ok_fused`: A (r, p, n), C (r, r+1), dzp (p,) updated, u (r, m) ->
    u_out (r, m); p = nz n, dz (p,) the diagonal blocks flat; c (n,) and Fc (r, p), or NULL.
    H (n, n), FS (2 r rows n) and Sc (r p) are this thread's scratch: the block's factors F
    and terms S, and the terms times c."""
    cdef int k = r + 1, p = nz * n, P = p * n, i, j, t, q, q0, q1, L
    cdef Work w = _carve(ws, iwork, P, m, k, lwork)
    cdef double *G = w.Rv                      # (k, k) row-major, as _gram_coefficients reads it
    cdef double *Gb = w.core                   # (r, r): one block's Gram matrix
    cdef floating *F = FS
    cdef floating *S = FS + r * rows * n
    cdef double *Z
    cdef double acc
    cdef floating cf
    memset(G, 0, k * k * sizeof(double))
    memset(Sc, 0, r * p * sizeof(double))
    q0 = p if sumsq(u, r * m) == 0.0 else 0    # all-zero u's (a reset sample): the terms weigh nothing
    if q0 == 0:
        step_matrix(W, ldw, lam, dz, n, nz, False, H)
    while q0 < p:                              # blocks of rows (range() with a variable step is Python's)
        q1 = min(p, q0 + rows)
        L = (q1 - q0) * n
        gemm(c'n', c'n', r, L, r, <floating> 1.0, C, k, A + q0 * n, P, <floating> 0.0, F, L)
        for i in range(r):
            cf = C[i * k + r]
            if cf != 0.0:                      # row q of the block has its diagonal entry at column q mod n
                t = q0 % n
                for q in range(q0, q1):
                    F[i * L + (q - q0) * n + t] += cf * dzp[q]
                    t = t + 1 if t + 1 < n else 0
        gemm(c'n', c't', r * (q1 - q0), n, n, <floating> 1.0, F, n, H, n, <floating> 0.0, S, n)
        if floating is double:
            kfrtrl_gram(S, r, L, Gb, r)
        else:                                  # widened in cache first: faster than widening in the tiles
            _widen(S, r * L, w.Wv)
            kfrtrl_gram(w.Wv, r, L, Gb, r)
        for i in range(r):
            acc = 0.0
            t = q0 % n
            for q in range(q0, q1):
                acc = acc + <double> S[i * L + (q - q0) * n + t] * dz[q]
                t = t + 1 if t + 1 < n else 0
            G[i * k + r] += acc
            for j in range(r):
                G[i * k + j] += Gb[i * r + j]
            if c != NULL:                      # the block's rows of S_i times c
                _rows_dot(S + i * L, q1 - q0, n, c, Sc + i * p + q0)
            memcpy(A + i * P + q0 * n, S + i * L, L * sizeof(floating))
        q0 = q1
    for i in range(r):
        G[r * k + i] = G[i * k + r]
    G[r * k + r] = sumsq(dz, p)
    _stack_u(u, a, r, m, w.Wu)
    if _gram_coefficients(eps, k, P, m, u_out, &w, svd_zero, min_pivot):
        for i in range(r * k):
            C[i] = <floating> w.Tk[i]
        if c != NULL:                          # F'c = C (S c) + C_r (D c), with the C just stored
            Z = w.Wv                           # (p,) float64 scratch: one row of F'c
            for i in range(r):
                for q in range(p):
                    Z[q] = <double> C[i * k + r] * dz[q] * c[q - (q // n) * n]
                for j in range(r):
                    acc = C[i * k + j]
                    for q in range(p):
                        Z[q] += acc * Sc[j * p + q]
                for q in range(p):
                    Fc[i * p + q] = <floating> Z[q]
    else:
        _widen(A, r * P, w.Wv)                 # the terms, then the diagonal one, as rows of Wv
        memset(w.Wv + r * P, 0, P * sizeof(double))
        for q in range(p):
            w.Wv[r * P + q * n + q % n] = dz[q]
        _stack_u(u, a, r, m, w.Wu)
        Z = w.Z if floating is float else <double *> A
        _householder_route(eps, k, P, m, u_out, Z, &w, svd_zero)
        if floating is float:
            _narrow(Z, r * P, A)
        memset(C, 0, r * k * sizeof(floating))
        for i in range(r):
            C[i * k + i] = 1.0
        if c != NULL:                          # the factors are A itself now
            _rows_dot(A, r * p, n, c, Sc)
            for i in range(r * p):
                Fc[i] = <floating> Sc[i]
    for q in range(p):
        dzp[q] = dz[q]


cdef inline void _rows_dot(const floating *X, int rows, int n, const floating *c, double *out) noexcept nogil:
    """out[i] = <X_i, c> (float64 out) for X (rows, n) row-major (vectorised C: :c:func:`kfrtrl_rows_dot`
    sums in double, :c:func:`kfrtrl_rows_dot_f` in float vectors, then double)."""
    if floating is double:
        kfrtrl_rows_dot(X, rows, n, c, out)
    else:
        kfrtrl_rows_dot_f(X, rows, n, c, out)


cdef inline void _stack_u(const floating *u, const floating *a, int r, int m,
                          double *Wu) noexcept nogil:
    """Wu (m, r+1) column-major, in float64 = the rows u (r, m), then a (m,)."""
    _widen(u, r * m, Wu)
    _widen(a, m, Wu + r * m)


cdef inline void _widen(const floating *x, Py_ssize_t n, double *out) noexcept nogil:
    """out[:n] = x[:n] in float64."""
    cdef Py_ssize_t t
    for t in range(n):
        out[t] = x[t]


cdef inline void _narrow(const double *x, Py_ssize_t n, floating *out) noexcept nogil:
    """out[:n] = x[:n] rounded to out's type."""
    cdef Py_ssize_t t
    for t in range(n):
        out[t] = <floating> x[t]


cdef bint _gram_coefficients(const floating *eps, int k, int P, int m, floating *U_out,
                             Work *w, double svd_zero, double min_pivot) noexcept nogil:
    """The Gram route from G_V: U_out (r, m) and w.Tk with V_out = Tk V; False if it does not apply.

    In: G_V = V Vᵀ (k, k) row-major in w.Rv (V's rows of length P), the u's in
    w.Wu (m, k). On False the outputs are untouched and w.Wu is scrambled.
    Terms whose A or u factor is exactly zero (right after a reset) are
    dropped: they add nothing to the sum, and the reference gives their zero
    singular values no weight. The long A side's R_V comes from the Cholesky
    factor of G_V (False when a scaled pivot is below min_pivot); the short u side
    is Householder-factored as in the reference (cheap, and repeated inputs make
    the u's nearly dependent). The singular values are padded with zeros to
    the reference's count min(r+1, m, P), so that m* and the branch agree.
    """
    cdef int r = k - 1, q = min(k, min(m, P)), ka = 0, info, i, j, t
    cdef char jobz = b'S'
    cdef double *Rv = w.Rv
    cdef double *Wu = w.Wu
    cdef int *idx = w.idx
    for i in range(k):
        if Rv[i * k + i] > 0.0 and sumsq(Wu + i * m, m) > 0.0:
            idx[ka] = i
            ka = ka + 1
    if ka > m or ka > P:
        return False
    memset(w.Tk, 0, k * r * sizeof(double))
    if ka == 0:
        for t in range(m * r):
            U_out[t] = 0.0
        return True
    _compact(Rv, k, idx, ka)
    if not _scaled_cholesky(Rv, ka, w.scale, min_pivot):
        return False
    for i in range(ka):                        # Wu's columns -> the active u's
        for t in range(m):
            Wu[t + i * m] = Wu[t + idx[i] * m]
    dgeqrf(&m, &ka, Wu, &m, w.tauu, w.work, &w.lwork, &info)
    for j in range(ka):                        # core = R_U R_Vᵀ (R_U in Wu's upper triangle)
        for i in range(ka):
            w.core[i + j * ka] = 0.0
            for t in range(max(i, j), ka):
                w.core[i + j * ka] += Wu[i + t * m] * Rv[j * ka + t]
    dgesdd(&jobz, &ka, &ka, w.core, &ka, w.s, w.Pm, &ka, w.QmT, &ka, w.work, &w.lwork, w.iwork, &info)
    if info != 0:
        return False
    for i in range(ka, q):
        w.s[i] = 0.0
    dorgqr(&m, &ka, &ka, Wu, &m, w.tauu, w.work, &w.lwork, &info)
    _finish(Wu, w.Pm, w.s, eps, ka, q, ka, ka, m, r, U_out, w.QmT, w.left, w.Cl, w.Tv, w.flip,
            w.scratch, svd_zero)
    for j in range(r):                         # T = R_V⁻¹ QmTᵀ F Cl, on the active terms
        _solve_upper(Rv, ka, w.Tv + j * ka, w.Tv + j * ka)
        for i in range(ka):
            w.Tk[idx[i] + j * k] = w.Tv[i + j * ka]
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


cdef void _householder_route(const floating *eps, int k, int P, int m, floating *U_out,
                             double *Z, Work *w, double svd_zero) noexcept nogil:
    """The reference's route: Householder QR of w.Wv (P, k) and w.Wu (m, k) (both overwritten);
    writes U_out (r, m) and Z (r, P) = V_out in float64."""
    cdef int r = k - 1, qv = min(P, k), qu = min(m, k), q = min(qu, qv), info, i, j, t
    cdef char side = b'L', trans = b'N', jobz = b'S'
    cdef double *Wv = w.Wv
    cdef double *Wu = w.Wu
    dgeqrf(&P, &k, Wv, &P, w.tauv, w.work, &w.lwork, &info)
    dgeqrf(&m, &k, Wu, &m, w.tauu, w.work, &w.lwork, &info)
    for j in range(qv):                        # core = R_U R_Vᵀ, both upper trapezoidal
        for i in range(qu):
            w.core[i + j * qu] = 0.0
            for t in range(max(i, j), k):
                w.core[i + j * qu] += Wu[i + t * m] * Wv[j + t * P]
    dgesdd(&jobz, &qu, &qv, w.core, &qu, w.s, w.Pm, &qu, w.QmT, &q, w.work, &w.lwork, w.iwork, &info)
    dorgqr(&m, &qu, &qu, Wu, &m, w.tauu, w.work, &w.lwork, &info)
    _finish(Wu, w.Pm, w.s, eps, q, q, qu, qv, m, r, U_out, w.QmT, w.left, w.Cl, w.Tv, w.flip,
            w.scratch, svd_zero)
    memset(Z, 0, P * r * sizeof(double))       # V_out = (Q_V [T; 0])ᵀ
    for j in range(r):
        for t in range(qv):
            Z[t + j * P] = w.Tv[t + j * qv]
    dormqr(&side, &trans, &P, &r, &qv, Wv, &P, w.tauv, Z, &P, w.work, &w.lwork, &info)


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
