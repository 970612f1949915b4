"""Propagation kernels of the numba backend: ``jvp_blocks``, ``jvp_dense``, ``jvp_state``, ``rank1_update``,
``kf_combine``, and the fused Elman-type steps ``kf_fused`` and ``uoro_fused``.

Same names and arguments as :mod:`kfrtrl._reference.propagate` (see :mod:`._common` for how
the work is split between BLAS and compiled loops).
"""
import numpy as np
from numba import get_num_threads, prange

from .. import _thresholds
from .._jit import kernel
from ..threads import blas_limit
from ._common import GEMM, _block, _blocks_contiguous, _diagonal_jacobian, _gemm, _has_contiguous_blocks, _parallel

# ---------------------------------------------------------------- jvp_blocks


def jvp_blocks(V, Vr, Wt, lam, dz, out, n_threads):
    """Apply one Jacobian layer ``J = Λ + D R`` to a stack of tangents (see the reference).

    V : (B, K, S_in*n);  Vr : (B, K, n_rec);  Wt : (n_rec, Z*n);
    lam : (B, S, S_in, n);  dz : (B, S, Z, n);  out : (B, K, S*n), written (any
    layout, fastest with each out[b] C-contiguous: the batch stride is free).
    Below PARALLEL_MIN_WORK elements (e.g. one tangent: UORO, NoBackTrack) one numpy GEMM of the
    whole batch, then Λ and D applied row by row. Above it, in blocks of GEMM_BLOCK_ROWS tangents
    (:mod:`kfrtrl._thresholds`): one GEMM (rows, n_rec) @ (n_rec, Z*n) through scipy's BLAS, then Λ
    and D applied while the block is in cache, the blocks in parallel on several threads (BLAS held
    at one thread). Both choices depend on the shapes only, never the thread count. For a
    one-block layer whose recurrent part is the whole input (the Elman cell)
    and K >= n, each sample's Jacobian ``H_b = diag(dz_b) R + diag(lam_b)`` is
    formed in an (n, n) scratch and ``out_b = V_b H_bᵀ`` is one GEMM while it
    is in cache (:func:`_jvp_folded_block`): no extra pass, no (B, n, n) array; in
    parallel over the samples, or over row blocks of each when the samples are
    fewer than the threads (batch 1), BLAS held at one thread.
    """
    B, K, _ = V.shape
    _, S, Z, n = dz.shape
    if S == Z == lam.shape[2] == 1 and Vr.shape[2] == n and K >= n:
        V, R = _blocks_contiguous(V), Wt.T         # R read in place (its rows are contiguous in W)
        _blocked(_jvp_folded, _jvp_folded_par, (V, R, lam, dz), out, _thresholds.row_blocks(B, K), n_threads)
        return
    V = np.ascontiguousarray(V).reshape(B * K, V.shape[2])
    target = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    rows_out = target.reshape(B * K, -1)
    if not _parallel(2, B * K * n * S):      # small (one tangent: UORO, NoBackTrack): one numpy GEMM
        _jvp_layer_small(V, np.matmul(Vr.reshape(B * K, Vr.shape[2]), Wt), lam, dz, rows_out, K)
    else:
        A, offset = _rows_operand(V, Vr)
        rows = _thresholds.GEMM_BLOCK_ROWS
        W, tb, ldb = _matrix_operand(Wt)
        args = (GEMM[V.dtype], V, A, offset, Vr.shape[2], W, tb, ldb, lam, dz, rows_out, K, rows, -(-B * K // rows))
        if _parallel(n_threads, B * K * n * S) and get_num_threads() > 1:
            with blas_limit(1):
                _jvp_layer_par(*args)
        else:
            _jvp_layer(*args)
    if target is not out:
        out[...] = target


def _matrix_operand(X):
    """2-D ``X`` -> (array whose first element starts it, 'n' or 't' as an integer, row stride): read
    in place when row-major or column-major (the transposed weight W[:, :n_rec].T), else copied."""
    item = X.itemsize
    if X.strides[1] == item and X.strides[0] >= X.shape[1] * item:
        return X, 110, X.strides[0] // item
    if X.strides[0] == item and X.strides[1] >= X.shape[0] * item:
        return X.T, 116, X.strides[1] // item
    return np.ascontiguousarray(X), 110, X.shape[1]


def _rows_operand(V2, Vr):
    """(A, column offset): the recurrent part Vr (B, K, n_rec) as columns of a 2-D row-major A,
    read in place when Vr is a column slice of V2 (B K, S_in n) (the cells pass V[:, :, rec]),
    else a C-contiguous copy (offset 0)."""
    item = V2.itemsize
    start = Vr.ctypes.data - V2.ctypes.data
    row = V2.strides[0]
    if (Vr.strides[2] == item and Vr.strides[1] == row and Vr.strides[0] == Vr.shape[1] * row
            and 0 <= start < row and start % item == 0 and start // item + Vr.shape[2] <= V2.shape[1]):
        return V2, start // item
    return np.ascontiguousarray(Vr).reshape(-1, Vr.shape[2]), 0


@kernel(inline=True)
def _jvp_folded_block(V, R, lam, dz, out, c, splits):
    """Block c of the folded route: rows lo..hi of out[b] = V[b] H_bᵀ, H_b = diag(dz[b, 0, 0]) R +
    diag(lam[b, 0, 0]) formed in the block's own (n, n) scratch (n² work), then one GEMM; each
    sample's K rows cut in ``splits`` blocks. R (n, n), any layout (rows with unit stride, as in
    W[:, :n], keep the row loop vectorised; copying R would cost a pass per step)."""
    K, n = V.shape[1], V.shape[2]
    b, s = c // splits, c % splits
    lo, hi = s * K // splits, (s + 1) * K // splits
    H = np.empty((n, n), dtype=out.dtype)
    _diagonal_jacobian(R, lam[:, 0, 0], dz[:, 0], b, H)
    np.dot(_block(V, b)[lo:hi], H.T, _block(out, b)[lo:hi])


@kernel()
def _jvp_folded(V, R, lam, dz, out, splits):
    for c in range(V.shape[0] * splits):
        _jvp_folded_block(V, R, lam, dz, out, c, splits)


@kernel(parallel=True)
def _jvp_folded_par(V, R, lam, dz, out, splits):
    for c in prange(V.shape[0] * splits):
        _jvp_folded_block(V, R, lam, dz, out, c, splits)


@kernel(inline=True)
def _jvp_layer_block(address, V, A, offset, n_rec, W, tb, ldb, lam, dz, out, K, rows, c):
    """Rows r0..r1 (block c of ``rows``) of the general route: Y = A[r0:r1, offset:offset +
    n_rec] @ op(W) (= Wt; ``tb``, ``ldb`` from :func:`_matrix_operand`) in a scratch (one GEMM),
    then :func:`_jvp_layer_rows` while Y is in cache. V, A, out 2-D row-major (B K rows)."""
    Z, n = dz.shape[2], dz.shape[3]
    r0 = c * rows
    r1 = min(r0 + rows, V.shape[0])
    Y = np.empty((r1 - r0, Z * n), dtype=out.dtype)
    _gemm(address, 110, tb, r1 - r0, Z * n, n_rec, A[r0:, offset:], A.shape[1], W, ldb, Y, Z * n)
    _jvp_layer_rows(V, Y, lam, dz, out, K, r0, r1)


@kernel(inline=True)
def _jvp_layer_rows(V, Y, lam, dz, out, K, r0, r1):
    """out[r] = Λ_b V[r] + D_b Y[r − r0] for rows r0..r1 (b = r // K); lam (B, S, S_in, n),
    dz (B, S, Z, n)."""
    S, Z, n = dz.shape[1], dz.shape[2], dz.shape[3]
    S_in = lam.shape[2]
    for r in range(r0, r1):
        b, y = r // K, r - r0
        for i in range(S):
            base = i * n
            for t in range(n):
                out[r, base + t] = dz[b, i, 0, t] * Y[y, t]
            for z in range(1, Z):
                for t in range(n):
                    out[r, base + t] += dz[b, i, z, t] * Y[y, z * n + t]
            for j in range(S_in):
                for t in range(n):
                    out[r, base + t] += lam[b, i, j, t] * V[r, j * n + t]


@kernel()
def _jvp_layer_small(V, Y, lam, dz, out, K):
    _jvp_layer_rows(V, Y, lam, dz, out, K, 0, V.shape[0])


@kernel()
def _jvp_layer(address, V, A, offset, n_rec, W, tb, ldb, lam, dz, out, K, rows, blocks):
    for c in range(blocks):
        _jvp_layer_block(address, V, A, offset, n_rec, W, tb, ldb, lam, dz, out, K, rows, c)


@kernel(parallel=True)
def _jvp_layer_par(address, V, A, offset, n_rec, W, tb, ldb, lam, dz, out, K, rows, blocks):
    for c in prange(blocks):
        _jvp_layer_block(address, V, A, offset, n_rec, W, tb, ldb, lam, dz, out, K, rows, c)


# ---------------------------------------------------------------- jvp_dense


def jvp_dense(V, Ht, out, n_threads):
    """``out[b] = V[b] @ Ht[b]``: the formed step Jacobian on a stack of tangents (see the reference).

    V : (B, K, N);  Ht : (B, N, N);  out : (B, K, N), written (any layout, fastest with each
    out[b] C-contiguous). One BLAS GEMM per sample, cut in row blocks when the samples are fewer
    than the cores (:func:`kfrtrl._thresholds.row_blocks`: the same blocks on any thread count);
    see :func:`_blocked` for the threads.
    """
    V, Ht = _blocks_contiguous(V), _blocks_contiguous(Ht)
    splits = _thresholds.row_blocks(V.shape[0], V.shape[1])
    _blocked(_jvp_dense_rows, _jvp_dense_rows_par, (V, Ht), out, splits, n_threads)


@kernel(inline=True)
def _jvp_dense_block(V, Ht, out, c, splits):
    """Block c of :func:`jvp_dense` with each sample's K rows cut in ``splits`` blocks."""
    K = V.shape[1]
    b, s = c // splits, c % splits
    lo, hi = s * K // splits, (s + 1) * K // splits
    np.dot(_block(V, b)[lo:hi], _block(Ht, b), _block(out, b)[lo:hi])


@kernel()
def _jvp_dense_rows(V, Ht, out, splits):
    for c in range(V.shape[0] * splits):
        _jvp_dense_block(V, Ht, out, c, splits)


@kernel(parallel=True)
def _jvp_dense_rows_par(V, Ht, out, splits):
    for c in prange(V.shape[0] * splits):
        _jvp_dense_block(V, Ht, out, c, splits)


def jvp_state(Ht, G, out, n_threads):
    """``out[b] = Ht[b]ᵀ @ G[b]``: the formed step Jacobian on a state-major influence (see the reference).

    Ht : (B, N, N);  G : (B, N, P);  out : (B, N, P), written. The wide (N, N) @ (N, P) GEMM per
    sample (through :func:`._common._gemm`: a column block is no ``np.dot`` operand), cut in column
    blocks when the samples are fewer than the cores; see :func:`_blocked` for the threads.
    """
    Ht, G = _blocks_contiguous(Ht), _blocks_contiguous(G)
    splits = _thresholds.row_blocks(G.shape[0], G.shape[2])
    _blocked(_jvp_state, _jvp_state_par, (GEMM[G.dtype], Ht, G), out, splits, n_threads)


def _blocked(serial, parallel, args, out, splits, n_threads):
    """Run ``serial(*args, target, splits)`` (or ``parallel``: from PARALLEL_MIN_WORK elements of
    ``out`` on with several threads, BLAS held at one thread), the blocks' GEMMs writing into
    ``out``, or into a C-contiguous copy when ``out``'s per-sample blocks are not."""
    target = out if _has_contiguous_blocks(out) else np.empty(out.shape, out.dtype)
    if _parallel(n_threads, out.size) and get_num_threads() > 1:
        with blas_limit(1):
            parallel(*args, target, splits)
    else:
        serial(*args, target, splits)
    if target is not out:
        out[...] = target


@kernel(inline=True)
def _jvp_state_block(address, Ht, G, out, c, splits):
    """Block c of :func:`jvp_state`: columns lo..hi of out[b] = H_b @ G[b][:, lo:hi], one GEMM."""
    N, P = G.shape[1], G.shape[2]
    b, s = c // splits, c % splits
    lo, hi = s * P // splits, (s + 1) * P // splits
    _gemm(address, 116, 110, N, hi - lo, N, Ht[b], N, G[b, :, lo:], P, out[b, :, lo:], P)   # 't', 'n'


@kernel()
def _jvp_state(address, Ht, G, out, splits):
    for c in range(G.shape[0] * splits):
        _jvp_state_block(address, Ht, G, out, c, splits)


@kernel(parallel=True)
def _jvp_state_par(address, Ht, G, out, splits):
    for c in prange(G.shape[0] * splits):
        _jvp_state_block(address, Ht, G, out, c, splits)


# ---------------------------------------------------------------- rank1_update


def rank1_update(w, s_w, d, a, s_d, w_out, n_threads):
    """``w_out[b] = w[b] * s_w[b] + (d[b] ⊗ a[b]) * s_d[b]`` in one pass (see the reference).

    w, w_out : (B, p, m) (w_out may be w);  s_w, s_d : (B,);  d : (B, p);  a : (B, m).
    """
    in_place = w_out is w             # then the loop reads and writes one array and vectorises
    if _parallel(n_threads, w.size):  # (the runtime alias check sends w_out = w to scalar code)
        _rank1_update_par(w, s_w, d, a, s_d, w_out, in_place)
    else:
        _rank1_update(w, s_w, d, a, s_d, w_out, in_place)


@kernel(inline=True)
def _rank1_row(w, s_w, d, a, s_d, w_out, b, i, in_place):
    """Row (b, i) of the update (indexing the full arrays: no views); ``in_place``: w_out is w."""
    sw, di, sd = s_w[b], d[b, i], s_d[b]
    if in_place:
        for j in range(w.shape[2]):
            w[b, i, j] = w[b, i, j] * sw + (di * a[b, j]) * sd
    else:
        for j in range(w.shape[2]):
            w_out[b, i, j] = w[b, i, j] * sw + (di * a[b, j]) * sd


@kernel()
def _rank1_update(w, s_w, d, a, s_d, w_out, in_place):
    p = w.shape[1]
    for row in range(w.shape[0] * p):
        _rank1_row(w, s_w, d, a, s_d, w_out, row // p, row % p, in_place)


@kernel(parallel=True)
def _rank1_update_par(w, s_w, d, a, s_d, w_out, in_place):
    p = w.shape[1]
    for row in prange(w.shape[0] * p):
        _rank1_row(w, s_w, d, a, s_d, w_out, row // p, row % p, in_place)


# ---------------------------------------------------------------- kf_combine


def kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's unbiased merge of (H A, u) and (D, a) into one Kronecker term (see the reference).

    HA : (B, C, p, N);  u : (B, C, m);  Dt : (B, p, N);  a : (B, m);  c1, c2 : (B, C);
    A_out : (B, C, p, N) (may be HA itself), u_out : (B, C, m) (may be u), written.
    Per (sample, chain) one pass for |H A| and |D| together (D is then in cache for the
    merge) and one fused pass for the merge.
    """
    in_place = A_out is HA                    # then the merge loop reads and writes one array
    if _parallel(n_threads, HA.size):
        _kf_combine_par(HA, u, Dt, a, c1, c2, A_out, u_out, in_place)
    else:
        _kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, in_place)


@kernel()
def _balance(sq_left, sq_right):
    """sqrt(|left| / |right|) from squared norms, 1 where either is zero."""
    if sq_left > 0.0 and sq_right > 0.0:
        return np.sqrt(np.sqrt(sq_left) / np.sqrt(sq_right))
    return 1.0


@kernel(inline=True)
def _kf_row(HA, u, Dt, a, c1, c2, A_out, u_out, b, c, in_place):
    """Chain c of sample b (indexing the full arrays: no views); squared norms in float64.

    ``in_place``: A_out is HA; the merge then touches only HA, which the compiler can
    vectorise without runtime alias checks.
    """
    p, N, m = HA.shape[2], HA.shape[3], u.shape[2]
    sq_ha = sq_d = 0.0
    for i in range(p):
        for t in range(N):
            x, y = np.float64(HA[b, c, i, t]), np.float64(Dt[b, i, t])
            sq_ha += x * x
            sq_d += y * y
    sq_u = sq_a = 0.0
    for j in range(m):
        x, y = np.float64(u[b, c, j]), np.float64(a[b, j])
        sq_u += x * x
        sq_a += y * y
    p1 = _balance(sq_ha, sq_u)
    p2 = _balance(sq_d, sq_a)
    s1, s2 = c1[b, c] / p1, c2[b, c] / p2
    if in_place:
        for i in range(p):
            for t in range(N):
                HA[b, c, i, t] = s1 * HA[b, c, i, t] + s2 * Dt[b, i, t]
    else:
        for i in range(p):
            for t in range(N):
                A_out[b, c, i, t] = s1 * HA[b, c, i, t] + s2 * Dt[b, i, t]
    w1, w2 = c1[b, c] * p1, c2[b, c] * p2
    for j in range(m):
        u_out[b, c, j] = w1 * u[b, c, j] + w2 * a[b, j]


@kernel()
def _kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, in_place):
    C = HA.shape[1]
    for row in range(HA.shape[0] * C):
        _kf_row(HA, u, Dt, a, c1, c2, A_out, u_out, row // C, row % C, in_place)


@kernel(parallel=True)
def _kf_combine_par(HA, u, Dt, a, c1, c2, A_out, u_out, in_place):
    C = HA.shape[1]
    for row in prange(HA.shape[0] * C):
        _kf_row(HA, u, Dt, a, c1, c2, A_out, u_out, row // C, row % C, in_place)



# ---------------------------------------------------------------- kf_fused


def kf_fused(A, u, W, lam, dz, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's whole step for a step Jacobian with diagonal blocks (see the reference).

    A : (B, C, p, n), p = Z n;  u : (B, C, m);  W : (p, m);  lam : (B, n);  dz : (B, Z, n)
    (or (B, n) for Z = 1);  a : (B, m);  c1, c2 : (B, C);  A_out : (B, C, p, n), not
    overlapping A (any layout, fastest C-contiguous);  u_out : (B, C, m), may be u; written.
    Per sample (:func:`_kf_fused`): H_b formed in an (n, n) scratch, one GEMM
    ``A_out[b] = A[b] H_bᵀ`` for all C chains, then, while that block is in cache,
    each chain's norm and one pass scaling it and adding the immediate term's diagonals dz_b.
    Samples run in parallel (BLAS held at one thread) from PARALLEL_MIN_WORK elements on.
    """
    B, C, p, n = A.shape
    V = np.ascontiguousarray(A).reshape(B, C * p, n)
    target = A_out if A_out.flags.c_contiguous else np.empty(A_out.shape, A_out.dtype)
    out = target.reshape(B, C * p, n)
    W, dz = np.ascontiguousarray(W), dz.reshape(B, p // n, n)
    if B > 1 and _parallel(n_threads, A.size):
        with blas_limit(1):
            _kf_fused_par(V, u, W, lam, dz, a, c1, c2, out, u_out, min(get_num_threads(), B))
    else:
        _kf_fused(V, u, W, lam, dz, a, c1, c2, out, u_out, 0, B)
    if target is not A_out:
        A_out[...] = target


@kernel()
def _kf_fused(V, u, W, lam, dz, a, c1, c2, out, u_out, lo, hi):
    """Samples lo..hi-1 of :func:`kf_fused`; V, out (B, C*p, n) with C-contiguous blocks."""
    n = V.shape[2]
    C = V.shape[1] // (dz.shape[1] * n)
    H = np.empty((n, n), dtype=out.dtype)
    for b in range(lo, hi):
        _diagonal_jacobian(W, lam, dz, b, H)
        np.dot(_block(V, b), H.T, _block(out, b))
        sq_d = sq_a = 0.0
        for z in range(dz.shape[1]):
            for t in range(n):
                sq_d += np.float64(dz[b, z, t]) * np.float64(dz[b, z, t])
        for j in range(a.shape[1]):
            sq_a += np.float64(a[b, j]) * np.float64(a[b, j])
        p2 = _balance(sq_d, sq_a)
        for c in range(C):
            _kf_fused_chain(u, dz, a, c1, c2, out, u_out, b, c, p2)


@kernel(inline=True)
def _kf_fused_chain(u, dz, a, c1, c2, out, u_out, b, c, p2):
    """Chain c of sample b: |H A| from out, then out = c1 out / p1 + c2 D / p2, u_out
    (D: the diagonals dz[b, z] of its Z (n, n) blocks)."""
    n = out.shape[2]
    p = dz.shape[1] * n
    lo = c * p
    sq_ha = sq_u = 0.0
    for i in range(lo, lo + p):
        for t in range(n):
            x = np.float64(out[b, i, t])
            sq_ha += x * x
    for j in range(u.shape[2]):
        x = np.float64(u[b, c, j])
        sq_u += x * x
    p1 = _balance(sq_ha, sq_u)
    s1, s2 = c1[b, c] / p1, c2[b, c] / p2
    for i in range(p):
        for t in range(n):
            out[b, lo + i, t] *= s1
    for z in range(dz.shape[1]):
        for t in range(n):
            out[b, lo + z * n + t, t] += s2 * dz[b, z, t]
    w1, w2 = c1[b, c] * p1, c2[b, c] * p2
    for j in range(u.shape[2]):
        u_out[b, c, j] = w1 * u[b, c, j] + w2 * a[b, j]


@kernel(parallel=True)
def _kf_fused_par(V, u, W, lam, dz, a, c1, c2, out, u_out, chunks):
    """:func:`_kf_fused` over ``chunks`` contiguous sample ranges in parallel."""
    B = V.shape[0]
    for c in prange(chunks):
        _kf_fused(V, u, W, lam, dz, a, c1, c2, out, u_out, c * B // chunks, (c + 1) * B // chunks)


# ---------------------------------------------------------------- uoro_fused


def uoro_fused(v, w, w_sq, W, lam, dz, a, nu, n_threads):
    """UORO's whole step in place for a diagonal step Jacobian (see the reference).

    v : (B, n);  w : (B, n, m);  w_sq : (B,) float64, |w_b|² in and out;  W : (n, m);
    lam, dz, nu : (B, n);  a : (B, m). Per sample one matrix-vector product over
    W's first n columns and one pass over w that also accumulates its new norm;
    samples in parallel when B > 1 and the work reaches PARALLEL_MIN_WORK.
    """
    if v.shape[0] > 1 and _parallel(n_threads, w.size):
        _uoro_fused_par(v, w, w_sq, W, lam, dz, a, nu)
    else:
        _uoro_fused(v, w, w_sq, W, lam, dz, a, nu, 0, v.shape[0])


@kernel()
def _ratio_root(num, den):
    """sqrt(num / den) where both are > 0, else 0 (drop the term)."""
    if num > 0.0 and den > 0.0:
        return np.sqrt(num / den)
    return 0.0


@kernel()
def _uoro_fused(v, w, w_sq, W, lam, dz, a, nu, lo, hi):
    """Samples lo..hi-1 of :func:`uoro_fused`."""
    n, m = v.shape[1], w.shape[2]
    Hv = np.empty(n)
    for b in range(lo, hi):
        sq_hv = sq_d = sq_a = 0.0
        for i in range(n):
            acc = 0.0
            for j in range(n):
                acc += W[i, j] * v[b, j]
            Hv[i] = lam[b, i] * v[b, i] + dz[b, i] * acc
            sq_hv += Hv[i] * Hv[i]
            sq_d += np.float64(dz[b, i]) * np.float64(dz[b, i])
        for j in range(m):
            sq_a += np.float64(a[b, j]) * np.float64(a[b, j])
        rho0 = _ratio_root(np.sqrt(w_sq[b]), np.sqrt(sq_hv))
        rho1 = _ratio_root(np.sqrt(sq_d * sq_a), np.sqrt(n))
        inv0 = 1.0 / rho0 if rho0 > 0.0 else 0.0
        inv1 = 1.0 / rho1 if rho1 > 0.0 else 0.0
        for i in range(n):
            v[b, i] = rho0 * Hv[i] + rho1 * nu[b, i]
        sq = 0.0
        for i in range(n):
            d = dz[b, i] * nu[b, i] * inv1
            for j in range(m):
                w[b, i, j] = w[b, i, j] * inv0 + d * a[b, j]
                x = np.float64(w[b, i, j])
                sq += x * x
        w_sq[b] = sq


@kernel(parallel=True)
def _uoro_fused_par(v, w, w_sq, W, lam, dz, a, nu):
    """:func:`_uoro_fused` with samples in parallel."""
    for b in prange(v.shape[0]):
        _uoro_fused(v, w, w_sq, W, lam, dz, a, nu, b, b + 1)


