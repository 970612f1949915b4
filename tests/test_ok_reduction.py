"""The OK reduction on its own (kfrtrl._reference.reduce.ok_reduce) and the OK estimator's exact start.

The reduction maps r+1 Kronecker terms (rows of U (r+1, m) and V (r+1, P)) to r terms whose sum
``Σ_i u_i v_iᵀ`` (m, P) equals the input sum in expectation over the signs, with the minimal added
variance ``S²/(k−1) − Σ_{i>m*} σ_i²``. Everything the tests compare against (σ, m*, S) is computed
here from the SVD of the input sum, independently of the kernel.
"""
import itertools

import numpy as np
import pytest

import kfrtrl
from kfrtrl._reference.reduce import ok_reduce


def _terms(sigma, m, P, seed):
    """U (k, m), V (k, P) whose sum UᵀV has the singular values ``sigma``, in a random term basis."""
    gen = np.random.default_rng(seed)
    k = len(sigma)
    left = np.linalg.qr(gen.standard_normal((m, k)))[0]
    right = np.linalg.qr(gen.standard_normal((P, k)))[0]
    X = gen.standard_normal((k, k)) + 2.0 * np.eye(k)        # invertible mixing of the terms
    U = X.T @ (np.asarray(sigma)[:, None] * left.T)
    V = np.linalg.solve(X, right.T)
    return U, V


def _reduce(U, V, signs):
    """ok_reduce on B copies of (U, V) with signs (B, k) -> reconstructed sums (B, m, P)."""
    B, k = signs.shape
    V_out = np.empty((B, k - 1, V.shape[1]))
    U_out = np.empty((B, k - 1, U.shape[1]))
    ok_reduce(np.repeat(V[None], B, 0), np.repeat(U[None], B, 0), signs, V_out, U_out, 1)
    return np.einsum("bim,bip->bmp", U_out, V_out)


def _all_signs(k):
    return np.array(list(itertools.product([1.0, -1.0], repeat=k)))


def _theory(M, r):
    """(m*, added variance S²/(k−1) − Σσ²) from the SVD of the input sum M, by the definition."""
    sigma = np.linalg.svd(M, compute_uv=False)[:r + 1]
    m_star = next(m for m in range(r + 1) if (r - m) * sigma[m] <= sigma[m:].sum())
    mixed = sigma[m_star:]
    if mixed.size < 2 or mixed.sum() == 0.0:
        return m_star, 0.0
    return m_star, mixed.sum() ** 2 / (mixed.size - 1) - np.sum(mixed ** 2)


# (singular values of the input sum, m* they must give) for r = len - 1
SPECTRA = [
    ([2.0, 0.7], 0),
    ([3.0, 1.0, 0.5], 1),
    ([1.0, 0.9, 0.8], 0),
    ([1.0, 0.9, 0.8, 0.7], 0),
    ([10.0, 1.0, 0.9, 0.8], 1),
    ([10.0, 5.0, 1.0, 0.5], 2),
    ([4.0, 1.5, 1.4, 1.3, 1.2], 1),
    ([4.0, 3.0, 2.5, 1.0, 0.2], 3),
]


@pytest.mark.parametrize("sigma,m_star", SPECTRA)
@pytest.mark.parametrize("m,P", [(7, 16), (5, 9)])
def test_exact_expectation_and_variance_over_all_signs(sigma, m_star, m, P):
    """Enumerating all 2^k equally likely sign vectors gives the exact mean and variance."""
    k = len(sigma)
    U, V = _terms(sigma, m, P, seed=len(sigma) * 100 + m)
    M = U.T @ V
    got_m_star, added = _theory(M, k - 1)
    assert got_m_star == m_star
    X = _reduce(U, V, _all_signs(k))
    np.testing.assert_allclose(X.mean(0), M, rtol=0, atol=1e-12 * np.abs(M).max())
    variance = np.mean(np.sum((X - M) ** 2, axis=(1, 2)))
    assert added > 0.0
    assert variance == pytest.approx(added, rel=1e-9)
    # added variance below the KF-style alternative of merging the two smallest terms with one sign pair
    assert added <= 2 * sigma[-1] * sigma[-2] + 1e-12


@pytest.mark.parametrize("sigma", [[1.0, 0.9, 0.8, 0.7], [10.0, 5.0, 1.0, 0.5]])
def test_monte_carlo_mean_and_variance(sigma):
    """Random signs from a Generator: sample mean and variance agree with theory within MC error."""
    N, k = 10000, len(sigma)
    U, V = _terms(sigma, 7, 16, seed=7)
    M = U.T @ V
    _, added = _theory(M, k - 1)
    signs = (2 * np.random.default_rng(8).integers(0, 2, size=(N, k)) - 1).astype(np.float64)
    X = _reduce(U, V, signs).reshape(N, -1)
    err2 = np.sum((X - M.ravel()) ** 2, axis=1)
    z = np.sum((X.mean(0) - M.ravel()) ** 2) * N / X.var(0, ddof=1).sum()
    se = err2.std(ddof=1) / np.sqrt(N)
    print(f"\n[ok_reduce] sigma {sigma}: z = {z:.3f}, MC variance {err2.mean():.5f} "
          f"± {se:.5f}, theory {added:.5f}", end="")
    assert z < 3.0
    # (for this reduction ||X - M||² does not even depend on the signs, so se may be ~0)
    assert abs(err2.mean() - added) <= 4 * se + 1e-10 * added


@pytest.mark.parametrize("r,m,P", [(1, 7, 16), (2, 7, 16), (3, 5, 9), (3, 2, 9), (2, 6, 2)])
def test_exact_when_terms_have_rank_at_most_r(r, m, P):
    """r+1 terms whose sum has rank <= r are kept exactly, whatever the signs."""
    gen = np.random.default_rng(r * 10 + m)
    rank = min(r, m, P)
    U = gen.standard_normal((r + 1, rank)) @ gen.standard_normal((rank, m))  # rank-deficient rows
    V = gen.standard_normal((r + 1, P))
    M = U.T @ V
    assert np.linalg.matrix_rank(M) <= r
    X = _reduce(U, V, _all_signs(r + 1))
    np.testing.assert_allclose(X, np.broadcast_to(M, X.shape), rtol=0, atol=1e-12 * np.abs(M).max())


def test_zero_input_gives_zero_output():
    X = _reduce(np.zeros((3, 5)), np.zeros((3, 8)), _all_signs(3))
    assert np.all(X == 0.0)


def test_is_random_when_rank_exceeds_r():
    """The contrast to the exact case: generic full-rank input gives sign-dependent output."""
    U, V = _terms([1.0, 0.9, 0.8], 7, 16, seed=3)
    X = _reduce(U, V, _all_signs(3))
    assert np.abs(X - X[0]).max() > 1e-2 * np.abs(X[0]).max()


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_ok_exact_for_first_r_steps_after_reset(rank, alpha):
    """OK(rank=r) equals exact RTRL's G for r steps from a reset (all or some samples), then departs."""
    B, n = 3, 4
    cell = kfrtrl.Elman(2, n, alpha=alpha, rng=31)
    xs = np.random.default_rng(32).standard_normal((12 + rank + 1, B, 2))
    ok = kfrtrl.OK(cell, rank=rank, batch_size=B, rng=33, backend="numpy")
    exact = kfrtrl.RTRL(cell, batch_size=B, backend="numpy")

    def errors():
        G = exact.influence("W")
        diff = np.linalg.norm((ok.influence("W") - G).reshape(B, -1), axis=1)
        return diff / np.linalg.norm(G.reshape(B, -1), axis=1)

    for t in range(rank):                                  # from construction
        ok.step(xs[t])
        exact.step(xs[t])
        assert errors().max() <= 1e-10
    for t in range(rank, 12):
        ok.step(xs[t])
        exact.step(xs[t])
    assert errors().min() > 1e-6                           # by now the estimate is random
    mask = np.array([True, False, True])
    ok.reset(mask)
    exact.reset(mask)
    for t in range(12, 12 + rank):
        ok.step(xs[t])
        exact.step(xs[t])
        err = errors()
        assert err[mask].max() <= 1e-10
        assert err[~mask].min() > 1e-6
    ok.step(xs[12 + rank])
    exact.step(xs[12 + rank])
    assert errors()[mask].min() > 1e-6                     # step r+1 needs the random merge


def test_ok_with_rank_at_least_m_is_exact_rtrl():
    """With rank >= m (= n + n_in + 1) the r+1 terms always have rank <= r: OK never mixes and is
    exact RTRL on every step (also exercises the reduction when m < r + 1)."""
    B, n, n_in = 2, 3, 2
    m = n + n_in + 1
    cell = kfrtrl.Elman(n_in, n, alpha=0.8, rng=41)
    xs = np.random.default_rng(42).standard_normal((15, B, n_in))
    ok = kfrtrl.OK(cell, rank=m, batch_size=B, rng=43, backend="numpy")
    exact = kfrtrl.RTRL(cell, batch_size=B, backend="numpy")
    for x in xs:
        ok.step(x)
        exact.step(x)
        G = exact.influence("W")
        np.testing.assert_allclose(ok.influence("W"), G, rtol=0, atol=1e-10 * np.abs(G).max())
