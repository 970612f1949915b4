"""Reference propagation kernels in plain numpy: ``jvp_blocks``, ``jvp_dense``, ``jvp_state``, ``rank1_update``,
``kf_combine``, and the fused Elman-type steps ``kf_fused`` and ``uoro_fused``.

Kernels know nothing of cells or estimators: pure functions on arrays, outputs allocated by
the caller, the same names and argument order in every backend (``kfrtrl._numba``,
``kfrtrl._cy``, each in its own ``propagate`` module). Inputs are assumed valid. The last
argument of every kernel is ``n_threads``, the number of threads it may use (the reference
ignores it).
"""
import numpy as np


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


def jvp_dense(V, Ht, out, n_threads):
    """The formed step Jacobian applied to a stack of tangents: ``out[b] = V[b] @ Ht[b]``.

    V : (B, K, N) tangents;  Ht : (B, N, N) with Ht[b] = H_bᵀ, the step Jacobian transposed
    (what the layer path gives for the tangents e_1 … e_N, see ``Cell.jvp``);  out : (B, K, N),
    written, not overlapping V or Ht (each sample's block C-contiguous, the batch stride free).
    Cost: one (K, N) @ (N, N) GEMM per sample, 2·B·K·N² flops.
    """
    np.matmul(V, Ht, out=out)


def jvp_state(Ht, G, out, n_threads):
    """The formed step Jacobian applied to a state-major influence: ``out[b] = Ht[b]ᵀ @ G[b]``.

    Ht : (B, N, N) with Ht[b] = H_bᵀ (as for :func:`jvp_dense`);  G : (B, N, P), row k the
    influence on state unit k;  out : (B, N, P), written, not overlapping G or Ht.
    Cost: one (N, N) @ (N, P) GEMM per sample, 2·B·N²·P flops: the wide product, which BLAS
    runs faster than the same flops as the tall (P, N) @ (N, N) of the tangent layout.
    """
    np.matmul(Ht.transpose(0, 2, 1), G, out=out)


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
    """KF-RTRL's whole step (propagation and merge) for a step Jacobian with diagonal blocks.

    For a step whose Jacobian is ``H_b = diag(lam_b) + Σ_z diag(dz_bz) W[z n:(z+1) n, :n]``
    and whose immediate term is ``D_b ⊗ a_b``, D_b (Z n, n) the diagonal blocks diag(dz_bz)
    stacked (Z = 1: the Elman cell, Z = 2: the RHN of depth 1; see ``Cell.diagonal_step``):
    :func:`kf_combine` of ``(H A, u)`` and ``(D_b, a_b)``, without forming D_b in a compiled
    backend.

    A : (B, C, p, n) factors of C chains (tangent layout), p = Z n;  u : (B, C, m);  W : (p, m)
    lam : (B, n);  dz : (B, Z, n), or (B, n) when Z = 1;  a : (B, m);  c1, c2 : (B, C) signs ±1
    A_out : (B, C, p, n), not overlapping A;  u_out : (B, C, m), may be u; written.
    Cost per sample: one (C p, n) @ (n, n) GEMM plus O(C p (n + m)).
    """
    B, C, p, n = A.shape
    Z = p // n
    V = A.reshape(B, C * p, n)
    HA = np.empty(A.shape, dtype=A.dtype)      # C order whatever A's layout: the reshape below is a view
    jvp_blocks(V, V, W[:, :n].T, lam.reshape(B, 1, 1, n), dz.reshape(B, 1, Z, n), HA.reshape(B, C * p, n), n_threads)
    Dt = np.zeros((B, p, n), dtype=A.dtype)
    _diagonal_blocks(Dt.reshape(B, p * n), dz.reshape(B, Z, n))
    kf_combine(HA, u, Dt, a, c1, c2, A_out, u_out, n_threads)


def _diagonal_blocks(flat, dz):
    """Write the immediate term's diagonals: flat (B, Z n n), zero elsewhere, viewed as Z stacked
    (n, n) blocks, gets diag(dz[:, z]) in block z; dz (B, Z, n)."""
    B, Z, n = dz.shape
    for z in range(Z):
        flat[:, z * n * n:(z + 1) * n * n:n + 1] = dz[:, z]


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


