"""Reference OK kernels in plain numpy: the reduction ``ok_reduce``, the fused Elman-type step
``ok_fused`` (the same names in every backend's ``reduce`` module; see :mod:`.propagate`) and
``ok_factors``, the factors of the fused step's deferred form (numpy only: every backend's
estimators call it from here).
"""
import numpy as np

from .. import _thresholds
from .propagate import _diagonal_blocks, jvp_blocks


def ok_fused(A, C, dzp, u, W, lam, dz, a, signs, c, u_out, Fc, n_threads):
    """OK's whole step (propagation and reduction) for a step Jacobian with diagonal blocks, on
    the deferred factors (A, C, dzp), updated in place.

    For a step whose Jacobian is ``H_b = diag(lam_b) + Σ_z diag(dz_bz) W[z n:(z+1) n, :n]``
    and whose immediate term is ``D_b ⊗ a_b`` with D_b (Z n, n) the diagonal blocks
    diag(dz_bz) stacked (Z = 1: the Elman cell, Z = 2: the RHN of depth 1; see
    ``Cell.diagonal_step``): :func:`ok_reduce` of the r + 1 terms ``(H F_i, u_i)`` and
    ``(D_b, a_b)``, F the factors (:func:`ok_factors`).

    The factors are held deferred: ``F_i = Σ_{j<r} C_ij A_j + C_ir D(dzp)``, so that a compiled
    backend can leave the reduction's recombination to the next step, where it runs on
    blocks of rows in cache before the propagation (:func:`kfrtrl._numba.reduce.ok_fused`).
    Any (A, C, dzp) with the same factors is the same state; this reference returns them
    recombined: A = F', C = [I 0], dzp = dz.

    A : (B, r, p, n) stored terms (tangent layout), p = Z n;  C : (B, r, r+1) coefficients
    ([I 0] for factors held as they are);  dzp : (B, Z, n) the diagonal term's blocks;
    all three C-contiguous, same dtype, updated in place.
    u : (B, r, m);  W : (p, m);  lam : (B, n);  dz : (B, Z, n), or (B, n) when Z = 1;  a : (B, m);
    signs : (B, r+1) of ±1, the mixing signs;  c : (B, n) or None, the gradient's state cotangent
    when it is known before the step (see ``Estimator.step``'s ``loss_grad``);
    u_out : (B, r, m), written, not overlapping the inputs;  Fc : (B, r, p), written when c is given: ``F'_i c``, what
    the gradient needs (a compiled backend takes it from the terms in cache, without a pass over
    the new factors).
    Cost per sample: one (r p, n) @ (n, n) GEMM (H_b: Z n³ flops per term) plus the reduction's O(r² p n).
    """
    B, r, p, n = A.shape
    Z = p // n
    F = ok_factors(A, C, dzp)
    HA = np.empty((B, r * p, n), dtype=A.dtype)
    V3 = F.reshape(B, r * p, n)
    jvp_blocks(V3, V3, W[:, :n].T, lam.reshape(B, 1, 1, n), dz.reshape(B, 1, Z, n), HA, n_threads)
    V = np.zeros((B, r + 1, p * n), dtype=A.dtype)
    V[:, :r] = HA.reshape(B, r, p * n)
    _diagonal_blocks(V[:, r], dz.reshape(B, Z, n))
    U = np.concatenate([u, a[:, None]], axis=1)
    out = np.empty((B, r, p * n), dtype=A.dtype)
    ok_reduce(V, U, signs, out, u_out, n_threads)
    A[...] = out.reshape(A.shape)
    C[...] = np.eye(r, r + 1, dtype=C.dtype)
    dzp[...] = dz.reshape(B, Z, n)
    if c is not None:
        Fc[...] = np.matmul(A.reshape(B, r * p, n), c[:, :, None]).reshape(B, r, p)


def ok_factors(A, C, dzp):
    """The factors F (B, r, p, n) of deferred ones: ``F_i = Σ_{j<r} C_ij A_j + C_ir D(dzp)``.

    A (B, r, p, n), C (B, r, r+1), dzp (B, Z, n) with p = Z n, as :func:`ok_fused` holds them;
    D(dzp) (p, n) stacks the blocks diag(dzp_z). Exact (bit for bit A) when C = [I 0].
    Cost per sample: r² p n multiply-adds.
    """
    B, r, p, n = A.shape
    Z = p // n
    F = np.einsum("bij,bjpn->bipn", C[:, :, :r], A)
    D = np.zeros((B, p * n), dtype=A.dtype)
    _diagonal_blocks(D, dzp.reshape(B, Z, n))
    F += C[:, :, r, None, None] * D.reshape(B, 1, p, n)
    return F


def ok_reduce(V, U, signs, V_out, U_out, n_threads):
    """OK's optimal unbiased reduction of r+1 Kronecker terms to r, per sample.

    V : (B, r+1, P) vectorised A-factors (P = p*N);  U : (B, r+1, m) u-factors;
    signs : (B, r+1) of ±1, the mixing signs E;
    V_out : (B, r, P), U_out : (B, r, m), written. Small factors in float64.
    Cost per sample: O(P (r+1)²) for the QR plus O((r+1)³).
    """
    for b in range(V.shape[0]):
        vb, ub = ok_reduce_one(V[b], U[b], signs[b])
        V_out[b] = vb
        U_out[b] = ub


def ok_reduce_one(V, U, eps):
    """One sample of :func:`ok_reduce`: (k, P), (k, m), (k,) -> (k-1, P), (k-1, m)."""
    k = V.shape[0]
    r = k - 1
    Qv, Rv = np.linalg.qr(V.T.astype(np.float64))
    Qu, Ru = np.linalg.qr(U.T.astype(np.float64))
    Pm, sigma, QmT = np.linalg.svd(Ru @ Rv.T, full_matrices=False)
    left = Qu @ Pm                              # (m, q) unit u-directions
    right = Qv @ QmT.T                          # (P, q) unit A-directions
    _fix_signs(left, right)
    if sigma.size == 0 or sigma[0] == 0.0:
        return np.zeros((r, V.shape[1]), V.dtype), np.zeros((r, U.shape[1]), U.dtype)
    sigma = np.where(sigma < _thresholds.SVD_ZERO * sigma[0], 0.0, sigma)
    q = sigma.size
    V_new = np.zeros((r, V.shape[1]))
    U_new = np.zeros((r, U.shape[1]))
    if q <= r:                                  # rank ≤ r: keep everything exactly
        root = np.sqrt(sigma)
        U_new[:q] = (left * root).T
        V_new[:q] = (right * root).T
        return V_new.astype(V.dtype), U_new.astype(U.dtype)
    m_star = _n_kept(sigma, r)
    root = np.sqrt(sigma[:m_star])
    U_new[:m_star] = (left[:, :m_star] * root).T
    V_new[:m_star] = (right[:, :m_star] * root).T
    S = sigma[m_star:].sum()
    if S > 0.0:
        kk = k - m_star
        M = eps[:kk, None] * _orth_complement(sigma[m_star:], S)  # (kk, kk-1) = E B
        scale = np.sqrt(S / (kk - 1))
        U_new[m_star:] = scale * (left[:, m_star:] @ M).T
        V_new[m_star:] = scale * (right[:, m_star:] @ M).T
    return V_new.astype(V.dtype), U_new.astype(U.dtype)


def _fix_signs(left, right):
    """Make each singular pair's sign deterministic: largest |entry| of left > 0."""
    idx = np.argmax(np.abs(left), axis=0)
    flip = np.sign(left[idx, np.arange(left.shape[1])])
    flip[flip == 0] = 1.0
    left *= flip
    right *= flip


def _n_kept(sigma, r):
    """Smallest m with (r - m) σ_{m+1} ≤ Σ_{i>m} σ_i (σ descending, length r+1)."""
    tail = np.cumsum(sigma[::-1])[::-1]         # tail[m] = Σ_{i≥m} σ_i (0-based)
    for m in range(r + 1):
        if (r - m) * sigma[m] <= tail[m]:
            return m
    return r


def _orth_complement(sigma_mix, S):
    """Orthonormal basis B (k, k-1) of v0⊥, v0 = sqrt(1 - (k-1) σ / S), by a Householder reflection."""
    kk = sigma_mix.size
    s_tilde = np.clip((kk - 1) * sigma_mix / S, 0.0, 1.0)
    w = np.sqrt(1.0 - s_tilde)
    w /= np.linalg.norm(w)                      # v0 is a unit vector up to round-off
    w[0] += 1.0 if w[0] >= 0.0 else -1.0
    H = np.eye(kk) - (2.0 / (w @ w)) * np.outer(w, w)
    return H[:, 1:]
