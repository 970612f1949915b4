"""Exact mean and variance of the random estimators, by enumerating every sign sequence.

At tiny sizes (Elman, n = 2, n_in = 1, T = 3-4 steps from a reset) the batch holds one
sample per sign sequence: sample b gets the signs spelt by the bits of b, all samples see
the same inputs, so the batch *is* the estimator's whole distribution, each sequence with
probability 2^-bits. No Monte-Carlo error: a bias or an excess variance of any size shows.

- Mean: the average over the batch equals exact RTRL's influence at every step
  (KF-RTRL, OK, UORO, NoBackTrack), to round-off.
- Variance: each step adds zero-mean noise N_t, uncorrelated across steps, and the later
  steps carry it forward linearly, so ``E|Ĝ_T − G_T|² = Σ_t E|H_T ⋯ H_{t+1} N_t|²``. Given the
  state before step t, N_t is a sum of terms X_q times distinct products of independent
  fair signs, so ``E|M N_t|² = Σ_q |M X_q|²`` with the X_q written out below from the papers'
  update rules (optimal scales included: KF's p1 = sqrt(|HA|/|u|), p2 = sqrt(|D|/|a|);
  UORO's ρ0 = sqrt(|θ|/|Hs|), ρ1 = sqrt(|νᵀF|/|ν|); NoBackTrack's ρ_i = sqrt(|F_i|)). The
  expectation over the state before step t is the batch average again.
"""
import itertools

import numpy as np
import pytest

import kfrtrl

BACKENDS = kfrtrl.available_backends()
N, N_IN = 2, 1


class _Signs:
    """Replaces ``est._draw_signs``: sample b's k signs of step t are ``table[t, b]``, in draw order.

    A draw of shape (..., B, ...) takes the next chunk of each sample's row; the batch axis is
    the one of size B (the others are small).
    """

    def __init__(self, est, table):
        self.table, self.t, self.col = table, -1, 0
        est._draw_signs = self

    def next_step(self):
        self.t, self.col = self.t + 1, 0

    def __call__(self, shape):
        B = self.table.shape[1]
        axis = shape.index(B)
        per = int(np.prod(shape)) // B
        chunk = self.table[self.t, :, self.col:self.col + per]
        self.col += per
        other = shape[:axis] + shape[axis + 1:]
        return np.moveaxis(chunk.reshape((B,) + other), 0, axis).copy()


def _all_sign_sequences(T, k):
    """(T, 2^(kT), k) of ±1: row b holds the bits of b, step by step."""
    B = 2 ** (k * T)
    bits = (np.arange(B)[:, None] >> np.arange(k * T)[None, :]) & 1
    return (2.0 * bits - 1.0).reshape(B, T, k).transpose(1, 0, 2)


def _trajectory(cell, xs):
    """Per step: H (N, N), F (N, p, m) and the (dz, a) of the Elman step, from a zero state."""
    s = cell.initial_state(1)
    steps = []
    for x in xs:
        s, cache = cell.forward(s, x)
        _, lam, dz, a = cell.diagonal_step(cache)
        dz = dz[:, 0]                                   # the Elman step: one diagonal block
        H = np.diag(lam[0]) + dz[0][:, None] * cell.W[:, :N]
        F = np.einsum("ki,i,j->kij", np.eye(N), dz[0], a[0])
        steps.append((H, F, dz[0], a[0]))
    return steps


def _estimate(est):
    """Each sample's influence estimate, (B, N, p, m)."""
    if hasattr(est, "influence"):
        return est.influence("W")
    return np.einsum("bk,bij->bkij", est._v, est._w["W"])


def _ratio_root(num, den):
    return np.sqrt(num / den) if num > 0 and den > 0 else 0.0


def _kf_noise(est, H, F, dz, a):
    """(B, C, N, p, m): per chain, (1/C) [(p2/p1) HA ⊗ a + (p1/p2) D ⊗ u] (sign c1 c2 of that chain)."""
    A, u = est._A["W"], est._u["W"]
    D = np.diag(dz)
    p2 = _ratio_root(np.linalg.norm(D), np.linalg.norm(a)) or 1.0
    out = np.zeros(A.shape[:2] + F.shape)
    for b, c in np.ndindex(A.shape[:2]):
        HA = A[b, c] @ H.T
        p1 = _ratio_root(np.linalg.norm(HA), np.linalg.norm(u[b, c])) or 1.0
        X = (p2 / p1) * np.einsum("ik,j->kij", HA, a) + (p1 / p2) * np.einsum("ik,j->kij", D, u[b, c])
        out[b, c] = X / est.n_chains
    return out


def _rank_one_noise(est, H, F, dz, a, per_unit):
    """UORO (per_unit False) or NoBackTrack (True): the terms of each sign pair and each linear sign."""
    rows = list(F)                                       # F_i (p, m): the influence of z_i on unit i
    if per_unit:
        rho = np.sqrt([np.linalg.norm(f) for f in rows])
    else:
        rho = np.full(N, np.sqrt(np.linalg.norm(F) / np.sqrt(N)))
    e = np.eye(N)
    terms = []
    for b in range(est.batch_size):
        v, w = est._v[b], est._w["W"][b]
        Hv = H @ v
        rho0 = _ratio_root(np.linalg.norm(w), np.linalg.norm(Hv))
        X = [(rho[i] / rho[j]) * np.einsum("k,ij->kij", e[i], rows[j])
             + (rho[j] / rho[i]) * np.einsum("k,ij->kij", e[j], rows[i])
             for i, j in itertools.combinations(range(N), 2)]
        if rho0 > 0:
            X += [(rho0 / rho[j]) * np.einsum("k,ij->kij", Hv, rows[j])
                  + (rho[j] / rho0) * np.einsum("k,ij->kij", e[j], w) for j in range(N)]
        terms.append(X)
    return np.array(terms)


NOISE = {
    "kf": _kf_noise,
    "uoro": lambda est, *step: _rank_one_noise(est, *step, per_unit=False),
    "nobacktrack": lambda est, *step: _rank_one_noise(est, *step, per_unit=True),
}
# name -> (constructor, signs per sample and step, steps)
CASES = {
    "kf": (lambda cell, **kw: kfrtrl.KFRTRL(cell, **kw), 2, 4),
    "kf2": (lambda cell, **kw: kfrtrl.KFRTRL(cell, n_chains=2, **kw), 4, 3),
    "uoro": (lambda cell, **kw: kfrtrl.UORO(cell, **kw), N, 4),
    "nobacktrack": (lambda cell, **kw: kfrtrl.NoBackTrack(cell, **kw), N + 1, 3),
    "ok1": (lambda cell, **kw: kfrtrl.OK(cell, rank=1, **kw), 2, 4),
    "ok2": (lambda cell, **kw: kfrtrl.OK(cell, rank=2, **kw), 3, 4),
}


def _enumerate(name, backend):
    """Run every sign sequence; -> (estimates per step, exact G per step, noise terms per step)."""
    make, k, T = CASES[name]
    cell = kfrtrl.Elman(N_IN, N, alpha=0.8, rng=7)
    cell.W[:, -1] = [0.3, -0.2]                          # a bias, so tanh' differs between units
    xs = np.random.default_rng(8).standard_normal((T, 1, N_IN))
    table = _all_sign_sequences(T, k)
    est = make(cell, batch_size=table.shape[1], backend=backend, n_threads=1)
    signs = _Signs(est, table)
    noise_of = NOISE.get(name.rstrip("0123456789"))
    G = np.zeros((N,) + cell.W.shape)
    estimates, exact, noises = [], [], []
    for x, (H, F, dz, a) in zip(xs, _trajectory(cell, xs)):
        if noise_of is not None:
            noises.append(noise_of(est, H, F, dz, a))
        signs.next_step()
        est.step(np.repeat(x, est.batch_size, axis=0))
        G = np.einsum("kl,lij->kij", H, G) + F
        estimates.append(_estimate(est))
        exact.append((G, H))
    return estimates, exact, noises


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_mean_is_rtrl(backend, name):
    estimates, exact, _ = _enumerate(name, backend)
    for t, (S, (G, _)) in enumerate(zip(estimates, exact), start=1):
        assert np.abs(S.mean(axis=0) - G).max() <= 1e-12 * np.abs(G).max(), f"step {t}"
    assert S.std(axis=0).max() > 1e-3 * np.abs(G).max()        # the estimate is genuinely random


def test_the_trajectory_is_rtrls():
    """The test's own G_t recursion (H, F from the Elman equations) is exact RTRL's influence."""
    cell = kfrtrl.Elman(N_IN, N, alpha=0.8, rng=7)
    xs = np.random.default_rng(8).standard_normal((4, 1, N_IN))
    rtrl, G = kfrtrl.RTRL(cell, backend="numpy"), np.zeros((N,) + cell.W.shape)
    for x, (H, F, _, _) in zip(xs, _trajectory(cell, xs)):
        rtrl.step(x)
        G = np.einsum("kl,lij->kij", H, G) + F
        np.testing.assert_allclose(rtrl.influence("W")[0], G, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["kf", "kf2", "uoro", "nobacktrack"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_variance_is_the_closed_form(backend, name):
    estimates, exact, noises = _enumerate(name, backend)
    for t in range(len(estimates)):
        G, _ = exact[t]
        variance = np.mean(np.sum((estimates[t] - G) ** 2, axis=(1, 2, 3)))
        closed = 0.0
        for s in range(t + 1):                             # noise of step s + 1 carried to step t + 1
            M = np.eye(N)
            for _, H in exact[s + 1:t + 1]:
                M = H @ M
            carried = np.einsum("kl,bqlij->bqkij", M, noises[s])
            closed += np.mean(np.sum(carried ** 2, axis=(1, 2, 3, 4)))
        print(f"\n[exact variance] {name} {backend} step {t + 1}: {variance:.6g} "
              f"(relative {variance / np.sum(G ** 2):.4g})", end="")
        assert abs(variance - closed) <= 1e-10 * closed + 1e-20 * np.sum(G ** 2), f"step {t + 1}: enumerated {variance}, closed form {closed}"
    assert closed > 0.0
