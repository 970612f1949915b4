"""Reference kernels in plain numpy.

Kernels know nothing of cells or estimators: pure functions on arrays,
outputs allocated by the caller, the same names and argument order in every
backend (``kfrtrl._numba``, ``kfrtrl._cy``). Inputs are assumed valid. The last
argument of every kernel is ``n_threads``, the number of threads it may use
(the reference ignores it).
"""
import numpy as np

# Singular values below this fraction of the largest are exact zeros in the
# OK reduction (otherwise the √σ split turns round-off into ~1e-9 errors).
SVD_ZERO = 1e-13


def jvp_blocks(V, Vr, Wt, lam, dz, out, n_threads):
    """Apply one Jacobian layer ``J = Λ + D R`` to a stack of tangents.

    V : (B, K, S_in*n) tangents;  Vr : (B, K, n_rec) their recurrent part
    Wt : (n_rec, Z*n) = Rᵀ (shared);  lam : (B, S, S_in, n);  dz : (B, S, Z, n)
    out : (B, K, S*n), written:  out = Λ V + D (Vr @ Wt).  S_in = S except in
    layers whose input and output state sizes differ (the GRU's).
    Cost: one GEMM of 2·B·K·n_rec·Z·n flops plus O(B K n S (S_in + Z)).
    """
    B, K, _ = V.shape
    _, S, Z, n = dz.shape
    S_in = lam.shape[2]
    Y = np.matmul(Vr, Wt).reshape(B, K, Z, n)
    Vb = V.reshape(B, K, S_in, n)
    ob = out.reshape(B, K, S, n)
    for i in range(S):
        acc = dz[:, None, i, 0] * Y[:, :, 0]
        for z in range(1, Z):
            acc += dz[:, None, i, z] * Y[:, :, z]
        for j in range(S_in):
            acc += lam[:, None, i, j] * Vb[:, :, j]
        ob[:, :, i] = acc


def outer_add(G, Dt, a, n_threads):
    """Exact RTRL immediate term: ``G[b, i, j, :] += Dt[b, i, :] * a[b, j]``.

    G : (B, p, m, N) in place;  Dt : (B, p, N);  a : (B, m).
    """
    G += Dt[:, :, None, :] * a[:, None, :, None]


def rank1_update(w, s_w, d, a, s_d, w_out, n_threads):
    """The rank-one estimators' (UORO, NoBackTrack) parameter-side update, in one pass.

    w : (B, p, m);  s_w, s_d : (B,) per-sample scales;  d : (B, p);  a : (B, m)
    w_out : (B, p, m), written (may be w itself):
        w_out[b] = w[b] * s_w[b] + (d[b] ⊗ a[b]) * s_d[b].
    """
    w_out[...] = w * s_w[:, None, None] + (d[:, :, None] * a[:, None, :]) * s_d[:, None, None]


def kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's unbiased merge of (H A, u) and (D, a) into one Kronecker term.

    HA : (B, C, p, N) propagated factors of C independent chains;  u : (B, C, m)
    Dt : (B, p, N), a : (B, m): the immediate term;  c1, c2 : (B, C) signs ±1
    A_out : (B, C, p, N), u_out : (B, C, m), written (A_out may be HA, u_out may be u):
        A' = c1 HA / p1 + c2 D / p2,  u' = c1 p1 u + c2 p2 a,
        p1 = sqrt(|HA| / |u|),  p2 = sqrt(|D| / |a|)   (p = 1 where a norm is 0).
    """
    n_ha = np.sqrt(np.einsum("bcpn,bcpn->bc", HA, HA))
    n_u = np.sqrt(np.einsum("bcm,bcm->bc", u, u))
    n_d = np.sqrt(np.einsum("bpn,bpn->b", Dt, Dt))
    n_a = np.sqrt(np.einsum("bm,bm->b", a, a))
    p1 = _balance(n_ha, n_u)
    p2 = _balance(n_d, n_a)[:, None]
    A_out[...] = (c1 / p1)[:, :, None, None] * HA + (c2 / p2)[:, :, None, None] * Dt[:, None]
    u_out[...] = (c1 * p1)[:, :, None] * u + (c2 * p2)[:, :, None] * a[:, None]


def kf_fused(A, u, W, lam, dz, a, c1, c2, A_out, u_out, n_threads):
    """KF-RTRL's whole step (propagation and merge) for a cell with a diagonal step Jacobian.

    For a step whose Jacobian is ``H_b = diag(lam_b) + diag(dz_b) W[:, :n]`` and whose
    immediate term is ``diag(dz_b) ⊗ a_b`` (the Elman cell, see ``Cell.diagonal_step``):
    :func:`kf_combine` of ``(H A, u)`` and ``(diag(dz), a)``, without forming either
    H_b or the diagonal D_b as arrays in a compiled backend.

    A : (B, C, n, n) factors of C chains (tangent layout);  u : (B, C, m);  W : (n, m)
    lam, dz : (B, n);  a : (B, m);  c1, c2 : (B, C) signs ±1
    A_out : (B, C, n, n), not overlapping A;  u_out : (B, C, m), may be u; written.
    Cost per sample: one (C n, n) @ (n, n) GEMM plus O(C n (n + m)).
    """
    B, C, n, _ = A.shape
    V = A.reshape(B, C * n, n)
    HA = np.empty_like(A)
    jvp_blocks(V, V, W[:, :n].T, lam.reshape(B, 1, 1, n), dz.reshape(B, 1, 1, n), HA.reshape(B, C * n, n), n_threads)
    Dt = np.zeros((B, n, n), dtype=A.dtype)
    Dt[:, np.arange(n), np.arange(n)] = dz
    kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, n_threads)


def ok_fused(A, u, W, lam, dz, a, signs, A_out, u_out, n_threads):
    """OK's whole step (propagation and reduction) for a cell with a diagonal step Jacobian.

    For a step whose Jacobian is ``H_b = diag(lam_b) + diag(dz_b) W[:, :n]`` and whose
    immediate term is ``diag(dz_b) ⊗ a_b`` (see ``Cell.diagonal_step``): :func:`ok_reduce`
    of the r + 1 terms ``(H A_i, u_i)`` and ``(diag(dz), a)``, in a compiled backend
    without forming H_b, the diagonal D_b or the (r + 1)-term stack as arrays.

    A : (B, r, n, n) factors (tangent layout);  u : (B, r, m);  W : (n, m)
    lam, dz : (B, n);  a : (B, m);  signs : (B, r+1) of ±1, the mixing signs
    A_out : (B, r, n, n), written, may be A itself;  u_out : (B, r, m), written, not
    overlapping the inputs.
    Cost per sample: one (r n, n) @ (n, n) GEMM plus the reduction's O(r² n²).
    """
    B, r, n, _ = A.shape
    HA = np.empty((B, r * n, n), dtype=A.dtype)
    V3 = A.reshape(B, r * n, n)
    jvp_blocks(V3, V3, W[:, :n].T, lam.reshape(B, 1, 1, n), dz.reshape(B, 1, 1, n), HA, n_threads)
    V = np.zeros((B, r + 1, n * n), dtype=A.dtype)
    V[:, :r] = HA.reshape(B, r, n * n)
    V[:, r, ::n + 1] = dz
    U = np.concatenate([u, a[:, None]], axis=1)
    out = np.empty((B, r, n * n), dtype=A.dtype)
    ok_reduce(V, U, signs, out, u_out, n_threads)
    A_out[...] = out.reshape(A_out.shape)


def uoro_fused(v, w, w_sq, W, lam, dz, a, nu, n_threads):
    """UORO's whole step, in place, for a cell with a diagonal step Jacobian.

    With ``H_b = diag(lam_b) + diag(dz_b) W[:, :n]`` and ``νᵀF = (dz_b ν_b) ⊗ a_b`` (the
    Elman cell, see ``Cell.diagonal_step``)::

        ρ0 = sqrt(|w| / |H v|),  ρ1 = sqrt(|dz ν| |a| / |ν|)   (0 where a norm is 0)
        v' = ρ0 H v + ρ1 ν,      w' = w / ρ0 + (dz ν) ⊗ a / ρ1  (a term with ρ = 0 dropped)

    v : (B, n), updated;  w : (B, n, m), updated;  w_sq : (B,) float64, |w_b|² on entry
    and |w'_b|² on exit (so no pass over w is spent on its norm);  W : (n, m);
    lam, dz : (B, n);  a : (B, m);  nu : (B, n) signs ±1.
    Cost per sample: one (n, n) matrix-vector product and one pass over w.
    """
    n = v.shape[1]
    Hv = lam * v + dz * (v @ W[:, :n].T)
    d = dz * nu
    n_f = np.sqrt(np.sum(d * d, axis=1) * np.sum(a * a, axis=1))
    rho0 = ratio_root(np.sqrt(w_sq), np.sqrt(np.sum(Hv * Hv, axis=1)))
    rho1 = ratio_root(n_f, np.full(v.shape[0], np.sqrt(n)))
    v[...] = rho0[:, None] * Hv + rho1[:, None] * nu
    s_w, s_d = inverse_or_zero(rho0), inverse_or_zero(rho1)
    rank1_update(w, s_w.astype(w.dtype), d, a, s_d.astype(w.dtype), w, n_threads)
    w_sq[...] = np.einsum("bpm,bpm->b", w, w, dtype=np.float64)


def ratio_root(num, den):
    """sqrt(num / den) where both are > 0, else 0 (meaning: drop that term); also the UORO
    family's general path (kfrtrl.estimators.uoro, nobacktrack)."""
    ok = (num > 0) & (den > 0)
    return np.where(ok, np.sqrt(np.where(ok, num, 0.0) / np.where(ok, den, 1.0)), 0.0)


def inverse_or_zero(rho):
    """1 / rho, and 0 where rho is 0 (the dropped term), in rho's dtype."""
    return np.where(rho > 0, 1.0 / np.where(rho > 0, rho, 1.0), 0.0)


def _balance(n_left, n_right):
    """sqrt(n_left / n_right), and 1 where either norm is zero."""
    ok = (n_left > 0) & (n_right > 0)
    return np.where(ok, np.sqrt(np.where(ok, n_left, 1.0) / np.where(ok, n_right, 1.0)), 1.0)


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
    sigma = np.where(sigma < SVD_ZERO * sigma[0], 0.0, sigma)
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
