"""Statistical claims with fixed seeds: unbiasedness and variance ordering of the stochastic estimators.

All chains run in one estimator: batch_size = number of chains and every sample gets the same
input, so the trajectory is shared and only the random signs differ between samples. The exact
influence G_t comes from RTRL on that trajectory.

Unbiasedness statistic: ``z = ||mean - G||² · N / tr Cov``. For an unbiased estimator
E[||mean - G||²] = tr Cov / N, so z ≈ 1 (a chi-square over its effective degrees of freedom);
with a bias b it grows like 1 + N ||b||² / tr Cov.
"""
import numpy as np
import pytest

import kfrtrl
from kfrtrl.diagnostics import z_statistic

N_CHAINS, N_STEPS, N_HIDDEN, N_IN = 5000, 12, 4, 2
CHECK_STEPS = (6, N_STEPS)                       # steps (1-based) at which G is compared
Z_BOUND = 3.0


def _cell():
    return kfrtrl.Elman(N_IN, N_HIDDEN, alpha=1.0, rng=3)


def _inputs():
    return np.random.default_rng(4).standard_normal((N_STEPS, 1, N_IN))


def _estimate(est):
    """Per-chain influence estimate (N, n_state·p·m) (rank-one estimators: v ⊗ w)."""
    if hasattr(est, "influence"):
        return est.influence("W").reshape(est.batch_size, -1)
    return (est._v[:, :, None, None] * est._w["W"][:, None]).reshape(est.batch_size, -1)


def _run(est, xs):
    """Step ``est`` over xs (each input repeated for every chain); estimates at CHECK_STEPS."""
    out = {}
    for t, x in enumerate(xs, start=1):
        est.step(np.repeat(x, est.batch_size, axis=0))
        if t in CHECK_STEPS:
            out[t] = _estimate(est)
    return out


@pytest.fixture(scope="module")
def exact():
    """Exact G_t (flattened) at CHECK_STEPS from RTRL on the shared trajectory."""
    return {t: G[0] for t, G in _run(kfrtrl.RTRL(_cell(), batch_size=1, backend="numpy"), _inputs()).items()}


MAKERS = {
    "uoro": lambda cell: kfrtrl.UORO(cell, batch_size=N_CHAINS, rng=101, backend="numpy"),
    "nobacktrack": lambda cell: kfrtrl.NoBackTrack(cell, batch_size=N_CHAINS, rng=102, backend="numpy"),
    "kf": lambda cell: kfrtrl.KFRTRL(cell, batch_size=N_CHAINS, rng=103, backend="numpy"),
    "kf2": lambda cell: kfrtrl.KFRTRL(cell, batch_size=N_CHAINS, rng=104, backend="numpy", n_chains=2),
    "ok1": lambda cell: kfrtrl.OK(cell, rank=1, batch_size=N_CHAINS, rng=105, backend="numpy"),
    "ok2": lambda cell: kfrtrl.OK(cell, rank=2, batch_size=N_CHAINS, rng=106, backend="numpy"),
    "ok3": lambda cell: kfrtrl.OK(cell, rank=3, batch_size=N_CHAINS, rng=107, backend="numpy"),
}


@pytest.fixture(scope="module")
def samples():
    """Lazily computed {estimator name: {step: (N, dim) estimates}}, shared by the tests below."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _run(MAKERS[name](_cell()), _inputs())
        return cache[name]

    return get


def relative_variance(S, G):
    """E||ĝ - G||² / ||G||² over the samples S (N, dim)."""
    return float(np.mean(np.sum((S - G) ** 2, axis=1)) / np.sum(G ** 2))


@pytest.mark.parametrize("name", list(MAKERS))
def test_unbiased(name, samples, exact):
    S = samples(name)
    for t in CHECK_STEPS:
        z = z_statistic(S[t], exact[t])
        print(f"\n[z] {name:12s} step {t:2d}: z = {z:.3f} (N = {N_CHAINS})", end="")
        assert z < Z_BOUND
        assert np.isfinite(S[t]).all()
    assert relative_variance(S[N_STEPS], exact[N_STEPS]) > 1e-3   # genuinely random, z is not 0/0


def test_variance_ordering(samples, exact):
    G = exact[N_STEPS]
    rv = {name: relative_variance(samples(name)[N_STEPS], G) for name in MAKERS}
    print("\n[relative variance] " + ", ".join(f"{k} {v:.4g}" for k, v in rv.items()), end="")
    assert rv["ok2"] < rv["kf"] < rv["uoro"]
    assert rv["ok3"] < rv["ok2"] < rv["ok1"]
    assert rv["ok1"] < rv["kf"]                      # optimal merge beats KF's at the same rank
    assert rv["nobacktrack"] < rv["uoro"]
    assert 0.42 < rv["kf2"] / rv["kf"] < 0.58        # averaging two chains halves the variance


class FrozenSignsKF(kfrtrl.KFRTRL):
    """Bug on purpose: the generator is re-seeded every step, so each chain's signs never change."""

    def step(self, x):
        self.rng = np.random.default_rng(123)
        return super().step(x)


class SharedSignKF(kfrtrl.KFRTRL):
    """KF-RTRL with one sign per step, c1 = c2 (second draw of a step repeats the first)."""

    _pending = None

    def _draw_signs(self, shape):
        if self._pending is None:
            self._pending = super()._draw_signs(shape)
            return self._pending
        signs, self._pending = self._pending, None
        return signs


def test_statistic_catches_frozen_signs(exact):
    S = _run(FrozenSignsKF(_cell(), batch_size=N_CHAINS, rng=108, backend="numpy"), _inputs())[N_STEPS]
    z_small = z_statistic(S[:N_CHAINS // 5], exact[N_STEPS])
    z = z_statistic(S, exact[N_STEPS])
    print(f"\n[z] frozen-sign KF (biased): z = {z:.1f} (N = {N_CHAINS}), {z_small:.1f} (N = {N_CHAINS // 5})", end="")
    assert z > 10.0
    assert z > 3.0 * z_small                         # a bias: z grows in proportion to N


def test_statistic_catches_a_bias_of_a_few_standard_errors(samples, exact):
    """Calibration: shift unbiased KF samples by b with ||b||² = 16 tr Cov / N; z must see it."""
    S = samples("kf")[N_STEPS]
    G = exact[N_STEPS]
    direction = np.random.default_rng(109).standard_normal(G.shape)
    b = direction * np.sqrt(16.0 * S.var(0, ddof=1).sum() / N_CHAINS) / np.linalg.norm(direction)
    z = z_statistic(S + b, G)
    print(f"\n[z] KF shifted by 4 standard errors: z = {z:.2f}", end="")
    assert z > 10.0


def test_kf_shared_sign_is_still_unbiased(exact):
    """c1 = c2 does not bias KF-RTRL: A and u both carry the previous step's sign, so the
    cross terms (H A) ⊗ a and D ⊗ u still average to zero. Only the signs' independence in
    time and across chains matters (see the frozen-sign test)."""
    S = _run(SharedSignKF(_cell(), batch_size=N_CHAINS, rng=110, backend="numpy"), _inputs())
    for t in CHECK_STEPS:
        z = z_statistic(S[t], exact[t])
        print(f"\n[z] shared-sign KF step {t}: z = {z:.3f}", end="")
        assert z < Z_BOUND


@pytest.mark.parametrize("name", ["rtrl", "uoro", "nobacktrack", "kf", "ok"])
def test_gradient_is_the_contraction_of_the_influence(name):
    """gradient(c) = Σ_b Σ_k c[b, k] Ĝ[b, k] for the estimator's own influence estimate Ĝ."""
    cell = _cell()
    make = {"rtrl": lambda: kfrtrl.RTRL(cell, batch_size=3, backend="numpy"),
            "uoro": lambda: kfrtrl.UORO(cell, batch_size=3, rng=1, backend="numpy"),
            "nobacktrack": lambda: kfrtrl.NoBackTrack(cell, batch_size=3, rng=1, backend="numpy"),
            "kf": lambda: kfrtrl.KFRTRL(cell, batch_size=3, rng=1, backend="numpy", n_chains=2),
            "ok": lambda: kfrtrl.OK(cell, rank=2, batch_size=3, rng=1, backend="numpy")}[name]
    est = make()
    gen = np.random.default_rng(5)
    for _ in range(5):
        est.step(gen.standard_normal((3, N_IN)))
    c = gen.standard_normal((3, N_HIDDEN))
    G = _estimate(est).reshape(3, N_HIDDEN, *cell.W.shape)
    np.testing.assert_allclose(est.gradient(c)["W"], np.einsum("bkij,bk->ij", G, c), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda cell: kfrtrl.KFRTRL(cell, rng=201, backend="numpy"),
    lambda cell: kfrtrl.OK(cell, rank=2, rng=202, backend="numpy"),
], ids=["kf", "ok2"])
def test_long_run_stays_finite(make):
    """20,000 steps on a random stream: factors stay bounded (the p / √σ splits rebalance them)."""
    T = 20_000
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, alpha=1.0, rng=200)
    gen = np.random.default_rng(203)
    xs = gen.standard_normal((T, 1, N_IN))
    dls = gen.standard_normal((T, 1, N_HIDDEN))
    est = make(cell)
    largest_factor = largest_grad = 0.0
    for x, dl in zip(xs, dls):
        est.step(x)
        g = est.gradient(dl)["W"]
        largest_grad = max(largest_grad, float(np.abs(g).max()))
        largest_factor = max(largest_factor, float(np.abs(est.factors("W")[0]).max()), float(np.abs(est._u["W"]).max()))
    print(f"\n[long run] {type(est).__name__}: max |factor entry| {largest_factor:.3g}, "
          f"max |gradient entry| {largest_grad:.3g}", end="")
    assert np.isfinite(g).all() and np.isfinite(est.state).all()
    assert largest_factor < 100.0
    assert largest_grad < 1e3
