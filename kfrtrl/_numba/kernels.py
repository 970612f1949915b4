"""Numba kernels: the functions of :mod:`kfrtrl._reference.kernels`, same names and arguments.

Each public kernel is a small Python function that issues the large GEMMs
through BLAS (numpy's for whole-batch products; ``np.dot`` inside a compiled
loop for per-sample ones, whose operands then stay in cache, with BLAS held
at one thread when the loop runs in parallel) and hands the remaining
elementwise and per-sample work to compiled loops, fused into as few passes
over memory as possible. A loop runs in parallel (``prange``
over rows or samples, thread count set by :func:`kfrtrl.threads.limit`)
only when ``n_threads > 1`` and the work is at least :data:`PARALLEL_MIN_WORK`
elements; below that one thread is faster than opening a parallel region.

The OK reduction uses the Gram matrix (a compiled, tiled loop) instead of
Householder QR on the long A side (see :func:`ok_reduce`), and falls back to
the reference for a sample whose A factors are linearly dependent or too
ill-conditioned.
"""
import numpy as np
from numba import carray, get_num_threads, prange, types
from numba.extending import intrinsic

# np.dot in compiled code calls scipy's BLAS, which numba loads lazily: import it with this
# backend, so that thread limits (kfrtrl.threads) entered afterwards see that library too.
import scipy.linalg.cython_blas  # noqa: E402,F401

from .._jit import kernel
from .._reference.kernels import SVD_ZERO, ok_reduce_one
from .._reference.kernels import ok_fused as _reference_ok_fused
from ..threads import blas_limit

# Elements of work below which a kernel runs on one thread.
PARALLEL_MIN_WORK = 1 << 16
# Smallest Cholesky pivot of a unit-diagonal Gram matrix accepted by the OK
# reduction's Gram route; below it (condition number of the row-normalised
# factors above ~1e3) the sample goes through Householder QR instead, which
# keeps the result within ~1e-12 relative of the reference.
MIN_PIVOT = 1e-6


def _parallel(n_threads, work):
    return n_threads > 1 and work >= PARALLEL_MIN_WORK


@intrinsic
def _pointer(typingctx, address, dtype):
    """The integer ``address`` as a pointer to ``dtype`` (for :func:`_block`)."""
    ptr = types.CPointer(dtype.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(types.uintp, dtype), codegen


@kernel()
def _block(X, b):
    """X[b] of a 3-D array whose per-sample blocks are C-contiguous, typed as a C-contiguous
    2-D array (so that ``np.dot`` can write into it whatever X's batch stride)."""
    return carray(_pointer(X[b].ctypes.data, X.dtype), (X.shape[1], X.shape[2]))


def _has_contiguous_blocks(X):
    """True if each X[b] of X (B, K, L) is C-contiguous (what :func:`_block` needs)."""
    if X.flags.c_contiguous:
        return True
    _, K, L = X.shape
    item = X.itemsize
    return (L == 1 or X.strides[2] == item) and (K == 1 or X.strides[1] == L * item)


def _blocks_contiguous(X):
    """X (B, K, L), copied unless each X[b] is C-contiguous already."""
    return X if _has_contiguous_blocks(X) else np.ascontiguousarray(X)


# ---------------------------------------------------------------- jvp_blocks


def jvp_blocks(V, Vr, Wt, lam, dz, out, n_threads):
    """Apply one Jacobian layer ``J = Λ + D R`` to a stack of tangents (see the reference).

    V : (B, K, S_in*n);  Vr : (B, K, n_rec);  Wt : (n_rec, Z*n);
    lam : (B, S, S_in, n);  dz : (B, S, Z, n);  out : (B, K, S*n), written (any
    layout, fastest with each out[b] C-contiguous: the batch stride is free).
    One GEMM (B*K, n_rec) @ (n_rec, Z*n) through BLAS, written straight into
    ``out`` when S = Z = 1, then one fused pass applying Λ and D. For a
    one-block layer whose recurrent part is the whole input (the Elman cell)
    and K >= n, each sample's Jacobian ``H_b = diag(dz_b) R + diag(lam_b)`` is
    formed in an (n, n) scratch and ``out_b = V_b H_bᵀ`` is one GEMM while it
    is in cache (:func:`_jvp_folded`): no extra pass, no (B, n, n) array.
    """
    B, K, _ = V.shape
    _, S, Z, n = dz.shape
    if S == Z == lam.shape[2] == 1 and Vr.shape[2] == n and K >= n:
        V, R = _blocks_contiguous(V), Wt.T         # R read in place (its rows are contiguous in W)
        target = out if _has_contiguous_blocks(out) else np.empty(out.shape, out.dtype)
        if B > 1 and _parallel(n_threads, out.size):
            with blas_limit(1):
                _jvp_folded_par(V, R, lam, dz, target, min(get_num_threads(), B))
        else:
            _jvp_folded(V, R, lam, dz, target, 0, B)
        if target is not out:
            out[...] = target
        return
    if S == 1 and Z == 1 and out.flags.c_contiguous:
        Y = out
    else:
        Y = np.empty((B, K, Z * n), dtype=out.dtype)
    np.matmul(Vr.reshape(B * K, Vr.shape[2]), Wt, out=Y.reshape(B * K, Z * n))
    if _parallel(n_threads, B * K * n * S):
        _jvp_scale_par(V, Y, lam, dz, out)
    else:
        _jvp_scale(V, Y, lam, dz, out)


@kernel()
def _jvp_folded(V, R, lam, dz, out, lo, hi):
    """out[b] = V[b] H_bᵀ for samples lo..hi-1, H_b = diag(dz[b, 0, 0]) R + diag(lam[b, 0, 0]).

    R (n, n), any layout (rows with unit stride, as in W[:, :n], keep the row loop
    vectorised; copying R would cost a pass per step); one (n, n) scratch holds H_b.
    """
    n = R.shape[0]
    H = np.empty((n, n), dtype=out.dtype)
    for b in range(lo, hi):
        _diagonal_jacobian(R, lam[:, 0, 0], dz[:, 0, 0], b, H)
        np.dot(_block(V, b), H.T, _block(out, b))


@kernel(parallel=True)
def _jvp_folded_par(V, R, lam, dz, out, chunks):
    """:func:`_jvp_folded` over ``chunks`` contiguous sample ranges in parallel (BLAS held at one thread).

    ``chunks`` is the thread count, an argument: numba's thread query is a ctypes call, which
    would stop the kernel from being cached.
    """
    B = V.shape[0]
    for c in prange(chunks):
        _jvp_folded(V, R, lam, dz, out, c * B // chunks, (c + 1) * B // chunks)


@kernel(inline=True)
def _jvp_row(V, Y, lam, dz, out, b, k):
    """out[b, k] = Λ_b V[b, k] + D_b Y[b, k] for one tangent (indexing the full arrays: no views).

    ``Y`` may be ``out`` itself when S = Z = 1 (each entry is read before it is written).
    """
    S, Z, n = dz.shape[1], dz.shape[2], dz.shape[3]
    S_in = lam.shape[2]
    for i in range(S):
        base = i * n
        for t in range(n):
            out[b, k, base + t] = dz[b, i, 0, t] * Y[b, k, t]
        for z in range(1, Z):
            for t in range(n):
                out[b, k, base + t] += dz[b, i, z, t] * Y[b, k, z * n + t]
        for j in range(S_in):
            for t in range(n):
                out[b, k, base + t] += lam[b, i, j, t] * V[b, k, j * n + t]


@kernel()
def _jvp_scale(V, Y, lam, dz, out):
    K = V.shape[1]
    for row in range(V.shape[0] * K):
        _jvp_row(V, Y, lam, dz, out, row // K, row % K)


@kernel(parallel=True)
def _jvp_scale_par(V, Y, lam, dz, out):
    K = V.shape[1]
    for row in prange(V.shape[0] * K):
        _jvp_row(V, Y, lam, dz, out, row // K, row % K)


# ---------------------------------------------------------------- outer_add


def outer_add(G, Dt, a, n_threads):
    """Exact RTRL immediate term ``G[b, i, j, :] += Dt[b, i, :] * a[b, j]`` (see the reference).

    G : (B, p, m, N) in place;  Dt : (B, p, N);  a : (B, m). One pass over G.
    """
    if _parallel(n_threads, G.size):
        _outer_add_par(G, Dt, a)
    else:
        _outer_add(G, Dt, a)


@kernel(inline=True)
def _outer_row(G, Dt, a, b, i):
    """G[b, i, j, :] += Dt[b, i, :] * a[b, j] for all j (indexing the full arrays: no views)."""
    for j in range(G.shape[2]):
        aj = a[b, j]
        for t in range(G.shape[3]):
            G[b, i, j, t] += Dt[b, i, t] * aj


@kernel()
def _outer_add(G, Dt, a):
    p = G.shape[1]
    for row in range(G.shape[0] * p):
        _outer_row(G, Dt, a, row // p, row % p)


@kernel(parallel=True)
def _outer_add_par(G, Dt, a):
    p = G.shape[1]
    for row in prange(G.shape[0] * p):
        _outer_row(G, Dt, a, row // p, row % p)


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


@kernel(inline=True)
def _diagonal_jacobian(R, lam, dz, b, H):
    """H = diag(dz[b]) R + diag(lam[b]) (n, n) for sample b; R (n, >= n) rows read in place."""
    n = H.shape[0]
    for t in range(n):
        d = dz[b, t]
        for s in range(n):
            H[t, s] = R[t, s] * d
        H[t, t] += lam[b, t]


# ---------------------------------------------------------------- kf_fused


def kf_fused(A, u, W, lam, dz, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's whole step for a diagonal step Jacobian (see the reference).

    A : (B, C, n, n);  u : (B, C, m);  W : (n, m);  lam, dz : (B, n);  a : (B, m);
    c1, c2 : (B, C);  A_out : (B, C, n, n), not overlapping A (any layout, fastest
    C-contiguous);  u_out : (B, C, m), may be u; written.
    Per sample (:func:`_kf_fused`): H_b formed in an (n, n) scratch, one GEMM
    ``A_out[b] = A[b] H_bᵀ`` for all C chains, then, while that block is in cache,
    each chain's norm and one pass scaling it and adding the diagonal D_b = diag(dz_b).
    Samples run in parallel (BLAS held at one thread) from PARALLEL_MIN_WORK elements on.
    """
    B, C, n, _ = A.shape
    V = np.ascontiguousarray(A).reshape(B, C * n, n)
    target = A_out if A_out.flags.c_contiguous else np.empty(A_out.shape, A_out.dtype)
    out = target.reshape(B, C * n, n)
    W = np.ascontiguousarray(W)
    if B > 1 and _parallel(n_threads, A.size):
        with blas_limit(1):
            _kf_fused_par(V, u, W, lam, dz, a, c1, c2, out, u_out, min(get_num_threads(), B))
    else:
        _kf_fused(V, u, W, lam, dz, a, c1, c2, out, u_out, 0, B)
    if target is not A_out:
        A_out[...] = target


@kernel()
def _kf_fused(V, u, W, lam, dz, a, c1, c2, out, u_out, lo, hi):
    """Samples lo..hi-1 of :func:`kf_fused`; V, out (B, C*n, n) with C-contiguous blocks."""
    n = V.shape[2]
    C = V.shape[1] // n
    H = np.empty((n, n), dtype=out.dtype)
    for b in range(lo, hi):
        _diagonal_jacobian(W, lam, dz, b, H)
        np.dot(_block(V, b), H.T, _block(out, b))
        sq_d = sq_a = 0.0
        for t in range(n):
            sq_d += np.float64(dz[b, t]) * np.float64(dz[b, t])
        for j in range(a.shape[1]):
            sq_a += np.float64(a[b, j]) * np.float64(a[b, j])
        p2 = _balance(sq_d, sq_a)
        for c in range(C):
            _kf_fused_chain(u, dz, a, c1, c2, out, u_out, b, c, p2)


@kernel(inline=True)
def _kf_fused_chain(u, dz, a, c1, c2, out, u_out, b, c, p2):
    """Chain c of sample b: |H A| from out, then out = c1 out / p1 + c2 diag(dz) / p2, u_out."""
    n = out.shape[2]
    lo = c * n
    sq_ha = sq_u = 0.0
    for i in range(lo, lo + n):
        for t in range(n):
            x = np.float64(out[b, i, t])
            sq_ha += x * x
    for j in range(u.shape[2]):
        x = np.float64(u[b, c, j])
        sq_u += x * x
    p1 = _balance(sq_ha, sq_u)
    s1, s2 = c1[b, c] / p1, c2[b, c] / p2
    for i in range(n):
        for t in range(n):
            out[b, lo + i, t] *= s1
        out[b, lo + i, i] += s2 * dz[b, i]
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


# ---------------------------------------------------------------- ok_reduce


def ok_reduce(V, U, signs, V_out, U_out, n_threads):
    """OK's optimal unbiased reduction of r+1 Kronecker terms to r, per sample (see the reference).

    V : (B, r+1, P);  U : (B, r+1, m);  signs : (B, r+1) of ±1;
    V_out : (B, r, P), U_out : (B, r, m), written (must not overlap V, U; any
    layout, fastest with each V_out[b] C-contiguous).

    Same result as the reference (Householder QR of both factor stacks, SVD
    of the core, the same sign convention, SVD_ZERO threshold, m* and mixing),
    computed with two passes over each sample's long A side, the second while
    it is still in cache: the Gram matrix ``V_b V_bᵀ`` (compiled loop, float64)
    gives its triangular factor by Cholesky of its unit-diagonal scaling (so
    only the conditioning of the row-normalised factors matters), the small u
    side is QR-factored as in the reference, the (r+1)² core is decomposed as
    there, and the new A's are one GEMM ``V_out[b] = C_b V_b`` with C_b (r, r+1).
    Samples run in parallel (BLAS held at one thread) from PARALLEL_MIN_WORK
    elements on. Terms whose A or u factor is exactly zero are dropped first.
    A sample whose active terms exceed P, or whose A-side Gram matrix has a
    Cholesky pivot below :data:`MIN_PIVOT`, is reduced by the reference instead.
    Cost per sample: ~(r+1)² P / 2 multiply-adds for the Gram matrix, r (r+1) P
    for the recombination (BLAS), O((r+1)³) for the rest.
    """
    B = V.shape[0]
    done = np.empty(B, dtype=np.bool_)
    V = _blocks_contiguous(V)
    target = V_out if _has_contiguous_blocks(V_out) else np.empty(V_out.shape, V_out.dtype)
    if B > 1 and _parallel(n_threads, V.size):
        with blas_limit(1):
            _ok_reduce_par(V, U, signs, SVD_ZERO, target, U_out, done, min(get_num_threads(), B))
    else:
        _ok_reduce_range(V, U, signs, SVD_ZERO, target, U_out, done, 0, B)
    if target is not V_out:
        V_out[...] = target
    for b in np.flatnonzero(~done):
        V_out[b], U_out[b] = ok_reduce_one(V[b], U[b], signs[b])


@kernel()
def _ok_reduce_range(V, U, signs, zero, V_out, U_out, done, lo, hi):
    """Samples lo..hi-1 by the Gram route; done[b] = False leaves sample b to the reference."""
    k, P = V.shape[1], V.shape[2]
    G = np.empty((k, k))
    coef = np.empty((k - 1, k))
    for b in range(lo, hi):
        X = _block(V, b)
        _gram(X, G)
        done[b] = _ok_gram_route(G, U[b], P, signs[b], zero, coef, U_out[b])
        if done[b]:
            np.dot(coef.astype(X.dtype), X, _block(V_out, b))


@kernel(parallel=True)
def _ok_reduce_par(V, U, signs, zero, V_out, U_out, done, chunks):
    """:func:`_ok_reduce_range` over ``chunks`` contiguous sample ranges in parallel."""
    B = V.shape[0]
    for c in prange(chunks):
        _ok_reduce_range(V, U, signs, zero, V_out, U_out, done, c * B // chunks, (c + 1) * B // chunks)


def ok_fused(A, u, W, lam, dz, a, signs, A_out, u_out, n_threads):
    """OK's whole step for a diagonal step Jacobian (see the reference).

    A : (B, r, n, n);  u : (B, r, m);  W : (n, m);  lam, dz : (B, n);  a : (B, m);
    signs : (B, r+1);  A_out : (B, r, n, n), written, may be A itself (any layout, fastest
    C-contiguous: each sample's factors are read before its output is written, and a sample
    left to the reference is not written before);  u_out : (B, r, m), written, not
    overlapping the inputs.
    Per sample (:func:`_ok_fused`), with everything in cache: H_b formed in a scratch,
    one GEMM for the r terms ``H A_i``, their Gram matrix extended by the diagonal term
    (whose products need only the diagonals), the reduction's coefficients as in
    :func:`ok_reduce`, and one GEMM recombining the terms plus a diagonal update for D_b.
    A sample the Gram route declines is reduced by the reference. Samples run in
    parallel (BLAS held at one thread) from PARALLEL_MIN_WORK elements on.
    """
    B, r, n, _ = A.shape
    A3 = np.ascontiguousarray(A).reshape(B, r * n, n)
    target = A_out if A_out.flags.c_contiguous else np.empty(A_out.shape, A_out.dtype)
    out = target.reshape(B, r, n * n)
    W = np.ascontiguousarray(W)
    done = np.empty(B, dtype=np.bool_)
    if B > 1 and _parallel(n_threads, A.size):
        with blas_limit(1):
            _ok_fused_par(A3, u, W, lam, dz, a, signs, SVD_ZERO, out, u_out, done, min(get_num_threads(), B))
    else:
        _ok_fused(A3, u, W, lam, dz, a, signs, SVD_ZERO, out, u_out, done, 0, B)
    for b in np.flatnonzero(~done):
        ref_out = np.empty((1,) + A_out.shape[1:], A_out.dtype)
        ref_u = np.empty((1,) + u_out.shape[1:], u_out.dtype)
        _reference_ok_fused(A[b:b + 1], u[b:b + 1], W, lam[b:b + 1], dz[b:b + 1], a[b:b + 1],
                            signs[b:b + 1], ref_out, ref_u, 1)
        target[b], u_out[b] = ref_out[0], ref_u[0]
    if target is not A_out:
        A_out[...] = target


@kernel()
def _ok_fused(A3, u, W, lam, dz, a, signs, zero, out, u_out, done, lo, hi):
    """Samples lo..hi-1 of :func:`ok_fused`; A3 (B, r*n, n) and out (B, r, n*n) C-contiguous blocks."""
    n = A3.shape[2]
    r = A3.shape[1] // n
    k, m = r + 1, a.shape[1]
    H = np.empty((n, n), dtype=out.dtype)
    S = np.empty((r * n, n), dtype=out.dtype)
    T = S.reshape(r, n * n)
    G = np.empty((k, k))
    Ub = np.empty((k, m), dtype=u.dtype)
    coef = np.empty((r, k))
    for b in range(lo, hi):
        _diagonal_jacobian(W, lam, dz, b, H)
        np.dot(_block(A3, b), H.T, S)
        _gram(T, G[:r, :r])
        sq = 0.0
        for t in range(n):
            sq += np.float64(dz[b, t]) * np.float64(dz[b, t])
        G[r, r] = sq
        for i in range(r):
            acc = 0.0
            for t in range(n):
                acc += np.float64(S[i * n + t, t]) * np.float64(dz[b, t])
            G[i, r] = acc
            G[r, i] = acc
        Ub[:r] = u[b]
        Ub[r] = a[b]
        done[b] = _ok_gram_route(G, Ub, n * n, signs[b], zero, coef, u_out[b])
        if done[b]:
            Ob = _block(out, b)
            np.dot(coef[:, :r].astype(out.dtype), T, Ob)
            for j in range(r):
                cj = coef[j, r]
                for t in range(n):
                    Ob[j, t * (n + 1)] += cj * dz[b, t]


@kernel(parallel=True)
def _ok_fused_par(A3, u, W, lam, dz, a, signs, zero, out, u_out, done, chunks):
    """:func:`_ok_fused` over ``chunks`` contiguous sample ranges in parallel."""
    B = A3.shape[0]
    for c in prange(chunks):
        _ok_fused(A3, u, W, lam, dz, a, signs, zero, out, u_out, done, c * B // chunks, (c + 1) * B // chunks)


@kernel()
def _gram(X, G):
    """G = X Xᵀ (k, k) accumulated in float64, for X (k, L) C-contiguous.

    In 3 x 3 tiles of row pairs (:func:`_gram_tile`): 6 row loads per 9 multiply-adds
    instead of 2 per 1, ~2x faster than row-by-row dots (and than BLAS) on these
    short-and-wide shapes. Edge tiles repeat the last row (same values written twice).
    """
    k = X.shape[0]
    T = np.empty((3, 3))
    for ib in range(0, k, 3):
        i0, i1, i2 = ib, min(ib + 1, k - 1), min(ib + 2, k - 1)
        for jb in range(0, ib + 1, 3):
            j0, j1, j2 = jb, min(jb + 1, k - 1), min(jb + 2, k - 1)
            _gram_tile(X, i0, i1, i2, j0, j1, j2, T)
            for a, i in enumerate((i0, i1, i2)):
                for c, j in enumerate((j0, j1, j2)):
                    G[i, j] = T[a, c]
                    G[j, i] = T[a, c]


@kernel()
def _gram_tile(X, i0, i1, i2, j0, j1, j2, T):
    """T[a, c] = <X[i_a], X[j_c]> in float64, one pass over the six rows (vectorised over columns)."""
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
def _ok_gram_route(Gv, U, P, eps, zero, coef, U_out):
    """One sample: coef (r, k) with V_out = coef @ V, and U_out (r, m); False = use Householder.

    Gv = V Vᵀ (k, k) float64, U (k, m), P the length of V's rows, eps (k,), zero = SVD_ZERO
    (an argument, not a global, so cached code never holds a stale value). Follows
    :func:`kfrtrl._reference.kernels.ok_reduce_one` step by step: the small u side by
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
    Rv = _scaled_cholesky_r(Gv, idx)
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
    for j in range(min(m_star, qa)):
        root = np.sqrt(sig[j])
        for t in range(m):
            U_out[j, t] = left[t, j] * root
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
                for t in range(m):
                    U_out[m_star + ll, t] += left[t, j] * M[jj, ll]
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
def _scaled_cholesky_r(G, idx):
    """Upper R with RᵀR = G[idx][:, idx], from Cholesky of its unit-diagonal scaling.

    Returns R with R[0, 0] = -1 if a pivot of the scaled matrix is below MIN_PIVOT.
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
        if s < MIN_PIVOT:
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
    """Orthonormal basis (k, k-1) of v0⊥, v0 = sqrt(1 - (k-1) σ / S), by a Householder reflection."""
    kk = sigma_mix.size
    w = np.empty(kk)
    for j in range(kk):
        s_tilde = min(max((kk - 1) * sigma_mix[j] / S, 0.0), 1.0)
        w[j] = np.sqrt(1.0 - s_tilde)
    w /= np.sqrt(np.sum(w * w))
    w[0] += 1.0 if w[0] >= 0.0 else -1.0
    beta = 2.0 / np.sum(w * w)
    H = np.empty((kk, kk - 1))
    for i in range(kk):
        for j in range(1, kk):
            H[i, j - 1] = (1.0 if i == j else 0.0) - beta * w[i] * w[j]
    return H
