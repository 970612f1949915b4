"""OK's reduction in the numba backend: ``ok_reduce`` and the fused Elman-type step ``ok_fused``.

Same names and arguments as :mod:`kfrtrl._reference.reduce`. The reduction uses the Gram
matrix (a compiled, tiled loop) instead of Householder QR on the long A side (see
:func:`ok_reduce`).
"""
import numpy as np
from numba import get_num_threads, prange

from .. import _thresholds
from .._jit import kernel
from ..threads import blas_limit
from ._common import GEMM, _block, _blocks_contiguous, _diagonal_jacobian, _gemm, _has_contiguous_blocks, _parallel

# ---------------------------------------------------------------- ok_reduce


def ok_reduce(V, U, signs, V_out, U_out, n_threads):
    """OK's optimal unbiased reduction of r+1 Kronecker terms to r, per sample (see the reference).

    V : (B, r+1, P);  U : (B, r+1, m);  signs : (B, r+1) of ±1;
    V_out : (B, r, P), U_out : (B, r, m), written (must not overlap V, U; any
    layout, fastest with each V_out[b] C-contiguous).

    Same result as the reference (Householder QR of both factor stacks, SVD
    of the core, the same sign convention, thresholds of :mod:`kfrtrl._thresholds`, m* and mixing),
    computed with two passes over each sample's long A side, the second while
    it is still in cache: the Gram matrix ``V_b V_bᵀ`` (compiled loop, float64)
    gives its triangular factor by Cholesky of its unit-diagonal scaling (so
    only the conditioning of the row-normalised factors matters), the small u
    side is QR-factored as in the reference, the (r+1)² core is decomposed as
    there, and the new A's are one GEMM ``V_out[b] = C_b V_b`` with C_b (r, r+1).
    Terms whose A or u factor is exactly zero are dropped first. A sample whose
    active terms exceed P, or whose A-side Gram matrix has a scaled Cholesky pivot
    below ``MIN_PIVOT`` (exactly or nearly dependent A factors), takes the reference's
    Householder route, compiled in the same loop (:func:`_householder_reduce`).
    Samples run in parallel (BLAS held at one thread) from PARALLEL_MIN_WORK elements on.
    Cost per sample: ~(r+1)² P / 2 multiply-adds for the Gram matrix, r (r+1) P
    for the recombination (BLAS), O((r+1)³) for the rest; ~4 (r+1)² P on the Householder route.
    """
    B = V.shape[0]
    V = _blocks_contiguous(V)
    target = V_out if _has_contiguous_blocks(V_out) else np.empty(V_out.shape, V_out.dtype)
    zero, pivot = _thresholds.SVD_ZERO, _thresholds.MIN_PIVOT
    if B > 1 and _parallel(n_threads, V.size):
        with blas_limit(1):
            _ok_reduce_par(V, U, signs, zero, pivot, target, U_out, min(get_num_threads(), B))
    else:
        _ok_reduce_range(V, U, signs, zero, pivot, target, U_out, 0, B)
    if target is not V_out:
        V_out[...] = target


@kernel()
def _ok_reduce_range(V, U, signs, zero, pivot, V_out, U_out, lo, hi):
    """Samples lo..hi-1: the Gram route, else the Householder route."""
    k, P = V.shape[1], V.shape[2]
    G = np.empty((k, k))
    coef = np.empty((k - 1, k))
    for b in range(lo, hi):
        X = _block(V, b)
        _gram(X, G)
        if _ok_gram_route(G, U[b], P, signs[b], zero, pivot, coef, U_out[b]):
            np.dot(coef.astype(X.dtype), X, _block(V_out, b))
        else:
            _householder_reduce(X, U[b], signs[b], zero, _block(V_out, b), U_out[b])


@kernel(parallel=True)
def _ok_reduce_par(V, U, signs, zero, pivot, V_out, U_out, chunks):
    """:func:`_ok_reduce_range` over ``chunks`` contiguous sample ranges in parallel."""
    B = V.shape[0]
    for c in prange(chunks):
        _ok_reduce_range(V, U, signs, zero, pivot, V_out, U_out, c * B // chunks, (c + 1) * B // chunks)


def ok_fused(A, C, dzp, u, W, lam, dz, a, signs, c, u_out, Fc, n_threads):
    """OK's whole step for a diagonal step Jacobian, on deferred factors (see the reference).

    A : (B, r, p, n), p = Z n;  C : (B, r, r+1);  dzp : (B, Z, n): the deferred factors
    ``F_i = Σ_{j<r} C_ij A_j + C_ir D(dzp)``, C-contiguous, updated in place;  u : (B, r, m);
    W : (p, m);  lam : (B, n);  dz : (B, Z, n) (or (B, n) for Z = 1);  a : (B, m);
    signs : (B, r+1);  c : (B, n) or None;  u_out : (B, r, m), written, not overlapping the inputs;
    Fc : (B, r, p), written when c is given: the new factors times c (the gradient's products).
    Per sample (:func:`_ok_fused`): H_b formed in a scratch; then in blocks of rows (the same
    rows of every term, :func:`kfrtrl._thresholds.ok_block_rows`), with the block in cache:
    the factors ``F = C A (+ C_r D)`` by one GEMM, the r terms ``H F_i`` by a second, their
    Gram matrix (extended by the diagonal term, whose products need only its diagonals)
    accumulated, the terms times c kept (r p numbers), and the terms written over A. The
    reduction's coefficients (as in :func:`ok_reduce`) become the new C: the recombination
    waits for the next step, where it costs no pass over memory, and Fc = C (S c) + C_r (D c).
    A sample the Gram route declines takes the Householder route and gets its factors
    recombined (C = [I 0]). A sample whose u's are all zero (right after a reset) skips the
    propagation: its terms weigh nothing in the reduction. Samples run in parallel (BLAS held
    at one thread) from PARALLEL_MIN_WORK elements on.
    """
    B, r, p, n = A.shape
    A3 = A.reshape(B, r * p, n)
    W, dz = np.ascontiguousarray(W), dz.reshape(B, p // n, n)
    zero, pivot = _thresholds.SVD_ZERO, _thresholds.MIN_PIVOT
    rows = _thresholds.ok_block_rows(r, p, n)
    address = GEMM[A.dtype]
    products = c is not None
    if not products:                           # nothing to compute: empty stand-ins of the right types
        c, Fc = np.empty((B, 0), A.dtype), np.empty((B, 0, 0), A.dtype)
    args = (A3, C, dzp, u, W, lam, dz, a, signs, zero, pivot, u_out, products, c, Fc, address, rows)
    if B > 1 and _parallel(n_threads, A.size):
        with blas_limit(1):
            _ok_fused_par(*args, min(get_num_threads(), B))
    else:
        _ok_fused(*args, 0, B)


@kernel()
def _ok_fused(A3, C, dzp, u, W, lam, dz, a, signs, zero, pivot, u_out, products, c, Fc, address, rows, lo, hi):
    """Samples lo..hi-1 of :func:`ok_fused`; A3 (B, r*p, n) C-contiguous, blocks of ``rows`` rows."""
    n, Z = A3.shape[2], dz.shape[1]
    p = Z * n
    r = A3.shape[1] // p
    k, m = r + 1, a.shape[1]
    H = np.empty((n, n), dtype=A3.dtype)
    F = np.empty((r * rows, n), dtype=A3.dtype)
    S = np.empty((r * rows, n), dtype=A3.dtype)
    Sc = np.zeros((r, p))
    G = np.empty((k, k))
    Gb = np.empty((r, r))
    Ub = np.empty((k, m), dtype=u.dtype)
    coef = np.empty((r, k))
    for b in range(lo, hi):
        Ab = _block(A3, b).reshape(r, p * n)
        G[:, :] = 0.0
        Sc[:, :] = 0.0
        if _any_nonzero(u[b]):                 # else (a reset sample) the terms weigh nothing: no propagation
            _diagonal_jacobian(W, lam, dz, b, H)
            for q0 in range(0, p, rows):
                q1 = min(p, q0 + rows)
                _ok_block(Ab, C[b], dzp[b], dz[b], H, q0, q1, address, F, S, Gb, G)
                if products:
                    _block_products(S, c[b], q0, q1, Sc)
        for t in range(r):
            G[r, t] = G[t, r]
        sq = 0.0
        for z in range(Z):
            for t in range(n):
                sq += np.float64(dz[b, z, t]) * np.float64(dz[b, z, t])
        G[r, r] = sq
        Ub[:r] = u[b]
        Ub[r] = a[b]
        if _ok_gram_route(G, Ub, p * n, signs[b], zero, pivot, coef, u_out[b]):
            for i in range(r):
                for j in range(k):
                    C[b, i, j] = coef[i, j]
            if products:
                _new_products(C[b], Sc, dz[b], c[b], Fc[b])
        else:
            X = np.zeros((k, p * n))
            X[:r] = Ab
            for z in range(Z):
                for t in range(n):
                    X[r, z * n * n + t * (n + 1)] = dz[b, z, t]
            _householder_reduce(X, Ub, signs[b], zero, Ab, u_out[b])
            C[b] = 0.0
            for i in range(r):
                C[b, i, i] = 1.0
            if products:                       # the factors are A itself now
                _block_products(Ab.reshape(r * p, n), c[b], 0, p, Sc)
                for i in range(r):
                    for q in range(p):
                        Fc[b, i, q] = Sc[i, q]
        dzp[b] = dz[b]


@kernel()
def _ok_block(Ab, Cb, dzp, dz, H, q0, q1, address, F, S, Gb, G):
    """Rows q0..q1-1 of every term of one sample: F = C A (+ C_r D(dzp)), S = F Hᵀ written over
    them, G[:r, :r] += S Sᵀ and G[i, r] += <S_i, D(dz)>; F, S (r (q1-q0), n) scratch, Gb (r, r)."""
    r, L = Ab.shape[0], (q1 - q0) * H.shape[0]
    n, k = H.shape[0], Cb.shape[1]
    P = Ab.shape[1]
    F2 = F[:r * (q1 - q0)].reshape(r, L)
    _gemm(address, 110, 110, r, L, r, Cb, k, Ab[:, q0 * n:], P, F2, L)
    for i in range(r):
        c = Cb[i, r]
        if c != 0.0:
            for q in range(q0, q1):
                F2[i, (q - q0) * n + q % n] += c * dzp[q // n, q % n]
    S2 = S[:r * (q1 - q0)]
    _gemm(address, 110, 116, r * (q1 - q0), n, n, F[:r * (q1 - q0)], n, H, n, S2, n)
    S3 = S2.reshape(r, L)
    _gram(S3, Gb)
    for i in range(r):
        acc = 0.0
        for q in range(q0, q1):
            acc += np.float64(S3[i, (q - q0) * n + q % n]) * np.float64(dz[q // n, q % n])
        G[i, r] += acc
        for j in range(r):
            G[i, j] += Gb[i, j]
        Ab[i, q0 * n:q1 * n] = S3[i]


@kernel()
def _any_nonzero(X):
    """True if the 2-D X has an entry other than 0."""
    for i in range(X.shape[0]):
        for t in range(X.shape[1]):
            if X[i, t] != 0.0:
                return True
    return False


@kernel()
def _block_products(S, cb, q0, q1, Sc):
    """Sc[i, q] = <S_i row q, c> for the block's rows q0..q1-1; S (r (q1-q0), n) holds them.
    Summed in S's dtype (the factors' own precision, as a GEMV would): widening each float32
    entry to float64 first costs twice the time."""
    n = cb.shape[0]
    rows = q1 - q0
    zero = S[0, 0] * 0                         # 0 of S's dtype
    for i in range(Sc.shape[0]):
        for q in range(rows):
            acc = zero
            for t in range(n):
                acc += S[i * rows + q, t] * cb[t]
            Sc[i, q0 + q] = acc


@kernel()
def _new_products(coef, Sc, dzb, cb, Fcb):
    """Fcb (r, p) = coef[:, :r] Sc + coef[:, r] (D(dz) c): the reduced factors times c (coef = the new C)."""
    r, p = Sc.shape
    n = cb.shape[0]
    Dc = np.empty(p)
    for q in range(p):
        Dc[q] = np.float64(dzb[q // n, q % n]) * np.float64(cb[q % n])
    acc = np.empty(p)
    for i in range(r):                         # row by row, each pass contiguous over q
        w = np.float64(coef[i, r])
        for q in range(p):
            acc[q] = w * Dc[q]
        for j in range(r):
            w = np.float64(coef[i, j])
            for q in range(p):
                acc[q] += w * Sc[j, q]
        for q in range(p):
            Fcb[i, q] = acc[q]


@kernel(parallel=True)
def _ok_fused_par(A3, C, dzp, u, W, lam, dz, a, signs, zero, pivot, u_out, products, c, Fc, address, rows,
                  chunks):
    """:func:`_ok_fused` over ``chunks`` contiguous sample ranges in parallel."""
    B = A3.shape[0]
    for j in prange(chunks):
        _ok_fused(A3, C, dzp, u, W, lam, dz, a, signs, zero, pivot, u_out, products, c, Fc, address, rows,
                  j * B // chunks, (j + 1) * B // chunks)


@kernel()
def _householder_reduce(V, U, eps, zero, V_out, U_out):
    """One sample the reference's way (:func:`kfrtrl._reference.reduce.ok_reduce_one`), compiled.

    V (k, P), U (k, m), eps (k,) -> V_out (k-1, P), U_out (k-1, m), written in their dtypes.
    Householder QR of both stacks in float64 (the same LAPACK calls as numpy's), the SVD of
    the core, then the kept and mixed pairs. For exactly or nearly dependent A factors, where
    the Gram route would lose accuracy. Cost ~4 k² P for the QR and k (k-1) P for V_out.
    """
    k, P = V.shape
    m = U.shape[1]
    r = k - 1
    Qv, Rv = np.linalg.qr(np.asfortranarray(V.T.astype(np.float64)))
    Qu, Ru = np.linalg.qr(np.asfortranarray(U.T.astype(np.float64)))
    core = np.ascontiguousarray(Ru) @ np.ascontiguousarray(Rv.T)
    Pm, sigma, QmT = np.linalg.svd(core, full_matrices=False)
    left = np.ascontiguousarray(Qu) @ np.ascontiguousarray(Pm)
    right = np.ascontiguousarray(Qv) @ np.ascontiguousarray(QmT.T)
    _fix_signs(left, right)
    V_out[:, :] = 0.0
    U_out[:, :] = 0.0
    if sigma.size == 0 or sigma[0] == 0.0:
        return
    sig = np.where(sigma < zero * sigma[0], 0.0, sigma)
    q = sig.size
    m_star = q if q <= r else _n_kept(sig, r)
    C = np.zeros((q, r))                                         # new term j = Σ_i pair i C[i, j]
    for j in range(min(m_star, r)):
        C[j, j] = np.sqrt(sig[j])
    S = sig[m_star:].sum()
    if m_star < q and S > 0.0:
        kk = k - m_star
        M = _orth_complement(sig[m_star:], S)
        scale = np.sqrt(S / (kk - 1))
        for i in range(kk):
            for ll in range(kk - 1):
                C[m_star + i, m_star + ll] = eps[i] * M[i, ll] * scale
    Vn = np.ascontiguousarray((right @ C).T)
    Un = (left @ C).T
    for j in range(r):
        for t in range(P):
            V_out[j, t] = Vn[j, t]
        for t in range(m):
            U_out[j, t] = Un[j, t]


@kernel()
def _gram(X, G):
    """G = X Xᵀ (k, k) accumulated in float64, for X (k, L) C-contiguous.

    In tiles of row pairs, 4 x 4 when k is a multiple of 4 (:func:`_gram_tile4`: 8 row loads
    per 16 multiply-adds), else 3 x 3 (:func:`_gram_tile`: 6 per 9, fewer tiles wasted on
    repeated edge rows): faster than row-by-row dots and than BLAS on these short-and-wide
    shapes, and the loads from cache, not the multiply-adds, set the pace (docs/performance.md).
    Edge tiles repeat the last row (same values written twice).
    """
    k = X.shape[0]
    w = 4 if k % 4 == 0 else 3
    T = np.empty((4, 4))
    for ib in range(0, k, w):
        i0, i1, i2, i3 = ib, min(ib + 1, k - 1), min(ib + 2, k - 1), min(ib + 3, k - 1)
        for jb in range(0, ib + 1, w):
            j0, j1, j2, j3 = jb, min(jb + 1, k - 1), min(jb + 2, k - 1), min(jb + 3, k - 1)
            if w == 4:
                _gram_tile4(X, i0, i1, i2, i3, j0, j1, j2, j3, T)
            else:
                _gram_tile(X, i0, i1, i2, j0, j1, j2, T)
            for a in range(w):
                i = min(ib + a, k - 1)
                for c in range(w):
                    j = min(jb + c, k - 1)
                    G[i, j] = T[a, c]
                    G[j, i] = T[a, c]


@kernel()
def _gram_tile(X, i0, i1, i2, j0, j1, j2, T):
    """T[a, c] = <X[i_a], X[j_c]> in float64 for a, c < 3, one pass over the six rows (vectorised
    over columns)."""
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = 0.0
    for t in range(X.shape[1]):
        x0, x1, x2 = np.float64(X[i0, t]), np.float64(X[i1, t]), np.float64(X[i2, t])
        y0, y1, y2 = np.float64(X[j0, t]), np.float64(X[j1, t]), np.float64(X[j2, t])
        a00 += x0 * y0
        a01 += x0 * y1
        a02 += x0 * y2
        a10 += x1 * y0
        a11 += x1 * y1
        a12 += x1 * y2
        a20 += x2 * y0
        a21 += x2 * y1
        a22 += x2 * y2
    T[0, 0], T[0, 1], T[0, 2] = a00, a01, a02
    T[1, 0], T[1, 1], T[1, 2] = a10, a11, a12
    T[2, 0], T[2, 1], T[2, 2] = a20, a21, a22


@kernel()
def _gram_tile4(X, i0, i1, i2, i3, j0, j1, j2, j3, T):
    """T[a, c] = <X[i_a], X[j_c]> in float64 for a, c < 4, one pass over the eight rows."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
    for t in range(X.shape[1]):
        x0, x1, x2, x3 = np.float64(X[i0, t]), np.float64(X[i1, t]), np.float64(X[i2, t]), np.float64(X[i3, t])
        y0, y1, y2, y3 = np.float64(X[j0, t]), np.float64(X[j1, t]), np.float64(X[j2, t]), np.float64(X[j3, t])
        a00 += x0 * y0
        a01 += x0 * y1
        a02 += x0 * y2
        a03 += x0 * y3
        a10 += x1 * y0
        a11 += x1 * y1
        a12 += x1 * y2
        a13 += x1 * y3
        a20 += x2 * y0
        a21 += x2 * y1
        a22 += x2 * y2
        a23 += x2 * y3
        a30 += x3 * y0
        a31 += x3 * y1
        a32 += x3 * y2
        a33 += x3 * y3
    T[0, 0], T[0, 1], T[0, 2], T[0, 3] = a00, a01, a02, a03
    T[1, 0], T[1, 1], T[1, 2], T[1, 3] = a10, a11, a12, a13
    T[2, 0], T[2, 1], T[2, 2], T[2, 3] = a20, a21, a22, a23
    T[3, 0], T[3, 1], T[3, 2], T[3, 3] = a30, a31, a32, a33


@kernel()
def _ok_gram_route(Gv, U, P, eps, zero, pivot, coef, U_out):
    """One sample: coef (r, k) with V_out = coef @ V, and U_out (r, m); False = use Householder.

    Gv = V Vᵀ (k, k) float64, U (k, m), P the length of V's rows, eps (k,), zero = SVD_ZERO,
    pivot = MIN_PIVOT (arguments, not globals, so cached code never holds a stale value). Follows
    :func:`kfrtrl._reference.reduce.ok_reduce_one` step by step: the small u side by
    Householder QR as there, the long A side's R by Cholesky of Gv with Q never formed,
    so left = Q_u P_m and right = Vᵀ R_v⁻¹ Q_mᵀ = V[idx]ᵀ Cr.
    """
    k, m = U.shape
    r = k - 1
    coef[:, :] = 0.0
    U_out[:, :] = 0.0
    idx = _active_terms(Gv, U)
    ka = idx.size
    if ka == 0:
        return True
    if ka > P:
        return False
    Rv = _scaled_cholesky_r(Gv, idx, pivot)
    if Rv[0, 0] < 0.0:
        return False
    Ua = np.empty((m, ka))
    for i in range(ka):
        for t in range(m):
            Ua[t, i] = U[idx[i], t]
    Qu, Ru = np.linalg.qr(Ua)
    Pm, sigma, QmT = np.linalg.svd(np.ascontiguousarray(Ru) @ Rv.T, full_matrices=False)
    left = np.ascontiguousarray(Qu) @ Pm                         # (m, qa) unit u-directions
    Cr = _solve_upper(Rv, np.ascontiguousarray(QmT.T))          # (ka, qa): right = V[idx]ᵀ Cr
    _fix_signs(left, Cr)
    if sigma[0] == 0.0:
        return True
    qa = sigma.size
    q = min(k, m, P)                                             # the reference's number of σ
    sig = np.zeros(q)
    for j in range(qa):
        sig[j] = sigma[j] if sigma[j] >= zero * sigma[0] else 0.0
    m_star = q if q <= r else _n_kept(sig, r)
    leftT = np.ascontiguousarray(left.T)                         # (qa, m): the rows below run contiguous
    for j in range(min(m_star, qa)):
        root = np.sqrt(sig[j])
        for t in range(m):
            U_out[j, t] = leftT[j, t] * root
        for i in range(ka):
            coef[j, idx[i]] = Cr[i, j] * root
    S = sig[m_star:].sum()
    if m_star < q and S > 0.0:
        kk = k - m_star
        scale = np.sqrt(S / (kk - 1))
        M = _orth_complement(sig[m_star:], S)
        for j in range(kk):
            M[j, :] *= eps[j] * scale
        for jj in range(min(kk, qa - m_star)):                  # zero directions carry no weight
            j = m_star + jj
            for ll in range(kk - 1):
                w = M[jj, ll]
                for t in range(m):
                    U_out[m_star + ll, t] += leftT[j, t] * w
                for i in range(ka):
                    coef[m_star + ll, idx[i]] += Cr[i, j] * M[jj, ll]
    return True


@kernel()
def _active_terms(Gv, U):
    """Indices of the terms whose A factor (Gv's diagonal) and u factor are both nonzero."""
    keep = np.zeros(Gv.shape[0], dtype=np.bool_)
    for i in range(Gv.shape[0]):
        keep[i] = Gv[i, i] > 0.0 and np.any(U[i] != 0.0)
    return np.flatnonzero(keep)


@kernel()
def _scaled_cholesky_r(G, idx, pivot):
    """Upper R with RᵀR = G[idx][:, idx], from Cholesky of its unit-diagonal scaling.

    Returns R with R[0, 0] = -1 if a pivot of the scaled matrix is below ``pivot``.
    """
    ka = idx.size
    d = np.empty(ka)
    for j in range(ka):
        d[j] = np.sqrt(G[idx[j], idx[j]])
    L = np.zeros((ka, ka))
    for j in range(ka):
        s = 1.0
        for l in range(j):
            s -= L[j, l] * L[j, l]
        if s < pivot * pivot:
            L[0, 0] = -1.0
            return L
        L[j, j] = np.sqrt(s)
        for i in range(j + 1, ka):
            s = G[idx[i], idx[j]] / (d[i] * d[j])
            for l in range(j):
                s -= L[i, l] * L[j, l]
            L[i, j] = s / L[j, j]
    R = np.zeros((ka, ka))
    for i in range(ka):
        for j in range(i, ka):
            R[i, j] = L[j, i] * d[j]
    return R


@kernel()
def _solve_upper(R, Y):
    """X = R⁻¹ Y for upper-triangular R (n, n) and Y (n, c), by back substitution."""
    n, c = Y.shape
    X = np.empty((n, c))
    for col in range(c):
        for i in range(n - 1, -1, -1):
            s = Y[i, col]
            for l in range(i + 1, n):
                s -= R[i, l] * X[l, col]
            X[i, col] = s / R[i, i]
    return X


@kernel()
def _fix_signs(left, right):
    """Flip each column pair so that the largest |entry| of left's column is positive."""
    for j in range(left.shape[1]):
        best = 0
        for t in range(1, left.shape[0]):
            if abs(left[t, j]) > abs(left[best, j]):
                best = t
        if left[best, j] < 0.0:
            left[:, j] *= -1.0
            right[:, j] *= -1.0


@kernel()
def _n_kept(sigma, r):
    """Smallest m with (r - m) σ_m <= Σ_{i>=m} σ_i (σ descending, length r+1)."""
    tail = np.empty(sigma.size)
    acc = 0.0
    for i in range(sigma.size - 1, -1, -1):
        acc += sigma[i]
        tail[i] = acc
    for m in range(r + 1):
        if (r - m) * sigma[m] <= tail[m]:
            return m
    return r


@kernel()
def _orth_complement(sigma_mix, S):
    """Orthonormal basis (k, k-1) of v0⊥, v0 = sqrt(1 - (k-1) σ / S), by a Householder reflection.

    v0 ∝ sqrt(S - (k-1) σ) (clipped to [0, S]) before normalising: no division, so a pair that
    carries all of S gets exactly 0 (fastmath's reciprocal division would leave ~1e-8 there,
    which then weights a null direction).
    """
    kk = sigma_mix.size
    w = np.empty(kk)
    for j in range(kk):
        w[j] = np.sqrt(min(max(S - (kk - 1) * sigma_mix[j], 0.0), S))
    w /= np.sqrt(np.sum(w * w))
    w[0] += 1.0 if w[0] >= 0.0 else -1.0
    beta = 2.0 / np.sum(w * w)
    H = np.empty((kk, kk - 1))
    for i in range(kk):
        for j in range(1, kk):
            H[i, j - 1] = (1.0 if i == j else 0.0) - beta * w[i] * w[j]
    return H
