"""Gradient-noise diagnostics: N independent chains of an estimator against exact RTRL.

On one fixed trajectory (an Elman cell or any other, random one-hot inputs, a fixed
random readout with random target classes giving the loss signal
``c_t = ∂L_t/∂h_t``), ``N`` chains run as one estimator of batch size N with
the same input in every sample, so only their random draws differ. Exact
RTRL (batch 1) on the same inputs gives the true influence ``G_t`` and
per-step gradient ``g_t``. At each measured step, with ``ĝ_b`` chain b's
gradient estimate:

- relative gradient variance ``mean_b |ĝ_b − g|² / |g|²``;
- relative variance of G, ``mean_b |Ĝ_b − G|²_F / |G|²_F``, the numerator
  estimated without materialising Ĝ through Gaussian probes q ~ N(0, I):
  ``E_q |Σ_k q_k (Ĝ_b − G)[k]|² = |Ĝ_b − G|²_F``;
- the bias statistic ``z = |mean_b ĝ_b − g|² · N / tr Cov(ĝ)``: ≈ 1 for an
  unbiased estimator, growing like ``1 + N |bias|² / tr Cov`` otherwise.
  For deterministic estimators (RTRL, TBPTT) tr Cov is round-off and z
  means nothing (huge even for exact RTRL); read the relative variance.
- the bias of the mean gradient ``ḡ = mean_b ĝ_b``, so biased estimators (SnAp-1,
  RFLO, TBPTT) sit in the same table as the unbiased ones: its cosine
  similarity with g, and its relative error with the chains' noise removed,
  ``sqrt(max(0, |ḡ − g|² − tr Cov(ĝ) / N) / |g|²)`` (``E|ḡ − g|² = |bias|² + tr Cov / N``,
  so this estimates |bias| / |g|: ≈ 0 for an unbiased estimator at any N). For a
  deterministic estimator the relative variance is then the squared bias.

Per-sample gradients come from the public ``gradient`` with the loss signal
masked to one sample, so a measured step costs N (1 + n_probes) gradient
calls. :func:`noise_vs_size` repeats the measurement over hidden sizes;
:meth:`NoiseResult.over_time` pools it over windows of the trajectory
(does the variance grow with t?).
"""
from dataclasses import dataclass

import numpy as np

from ._validation import as_generator, check_int
from .cells import Elman
from .estimators import EXACT, make_estimator
from .readout import Readout, softmax_xent


@dataclass
class NoiseResult:
    """What :func:`gradient_noise` measured: the settings and, per measured step, (K,) float64 arrays.

    :meth:`summary` gives the pooled relative variances (sums over the measured
    steps of numerator and denominator, robust to a step with a tiny |g|),
    the pooled relative bias and the means of z and of the cosine.

    Parameters
    ----------
    estimator : str, the estimator's spec (or the factory's name)
    n_hidden, n_chains : int, the cell's size and the chains N
    steps : (K,) int array, the measured steps (1-based)
    grad_err, grad_norm2 : (K,) arrays, mean_b |ĝ_b − g|² and |g|²
    G_err, G_norm2 : (K,) arrays, mean_b |Ĝ_b − G|²_F (probe estimate) and |G|²_F
    z : (K,) array, the bias statistic (:func:`z_statistic`)
    mean_err, mean_noise : (K,) arrays, |ḡ − g|² and its part expected from the chains' noise, tr Cov(ĝ) / N
    cos : (K,) array, the cosine of ḡ and g
    """

    estimator: str
    n_hidden: int
    n_chains: int
    steps: np.ndarray
    grad_err: np.ndarray
    grad_norm2: np.ndarray
    G_err: np.ndarray
    G_norm2: np.ndarray
    z: np.ndarray
    mean_err: np.ndarray
    mean_noise: np.ndarray
    cos: np.ndarray

    @property
    def rel_var_grad(self):
        """(K,) relative gradient variance per measured step."""
        return self.grad_err / self.grad_norm2

    @property
    def rel_var_G(self):
        """(K,) relative variance of the influence G per measured step."""
        return self.G_err / self.G_norm2

    def summary(self):
        """{"rel_var_grad", "rel_var_G", "z", "bias", "bias_floor", "cos"} over the measured steps.

        ``bias``: sqrt(max(0, Σ (mean_err − mean_noise)) / Σ |g|²), the relative error of
        the mean gradient with the chains' noise removed; ``bias_floor``: sqrt(Σ mean_noise /
        Σ |g|²), the chains' noise in the mean, below which a bias is not resolved (0 for a
        deterministic estimator); ``cos``: the mean cosine. All floats.
        """
        excess = max(0.0, float(np.sum(self.mean_err - self.mean_noise)))
        return {
            "rel_var_grad": float(self.grad_err.sum() / self.grad_norm2.sum()),
            "rel_var_G": float(self.G_err.sum() / self.G_norm2.sum()),
            "z": float(np.mean(self.z)),
            "bias": float(np.sqrt(excess / self.grad_norm2.sum())),
            "bias_floor": float(np.sqrt(self.mean_noise.sum() / self.grad_norm2.sum())),
            "cos": float(np.mean(self.cos)),
        }

    def over_time(self, windows):
        """The relative variances pooled over ``windows`` consecutive groups of the measured steps.

        Parameters
        ----------
        windows : int in [1, number of measured steps]
            Groups differ in size by at most one.

        Returns
        -------
        first, last : (windows,) int arrays, the first and last measured step of each group
        rel_var_grad, rel_var_G : (windows,) float64, pooled as in :meth:`summary`
        """
        windows = check_int("windows", windows, 1)
        if windows > len(self.steps):
            raise ValueError(f"windows: expected at most the {len(self.steps)} measured steps, got {windows}")
        groups = np.array_split(np.arange(len(self.steps)), windows)
        first = np.array([self.steps[g[0]] for g in groups])
        last = np.array([self.steps[g[-1]] for g in groups])
        grad = np.array([self.grad_err[g].sum() / self.grad_norm2[g].sum() for g in groups])
        G = np.array([self.G_err[g].sum() / self.G_norm2[g].sum() for g in groups])
        return first, last, grad, G


def per_sample_gradients(est, dl_dh):
    """Each sample's gradient estimate, flattened (parameters in sorted name order).

    Parameters
    ----------
    est : kfrtrl estimator
        After a ``step``.
    dl_dh : (batch, n_hidden) array of the cell's dtype
        The loss signals ∂L/∂h of the samples.

    Returns
    -------
    (batch, P) float64 array
        P: the cell's parameter count.

    Notes
    -----
    Cost: ``batch`` calls of ``est.gradient`` with the signal masked to one sample.
    """
    masked = np.zeros_like(dl_dh)
    rows = []
    for b in range(est.batch_size):
        masked[:] = 0.0
        masked[b] = dl_dh[b]
        grads = est.gradient(masked)
        rows.append(np.concatenate([grads[k].ravel() for k in sorted(grads)]))
    return np.array(rows, dtype=np.float64)


def z_statistic(samples, exact):
    """The bias statistic ``|mean − exact|² · N / tr Cov``: about 1 for an unbiased estimate.

    Parameters
    ----------
    samples : (N, P) float array, N >= 2 independent estimates
    exact : (P,) float array, the estimated quantity

    Returns
    -------
    float
        inf for a deterministic but wrong estimate, nan for a deterministic exact one.
    """
    N = samples.shape[0]
    bias2 = float(np.sum((samples.mean(axis=0) - exact) ** 2))
    tr_cov = float(samples.var(axis=0, ddof=1).sum())
    if tr_cov == 0.0:
        return np.inf if bias2 > 0.0 else np.nan
    return bias2 * N / tr_cov


def gradient_noise(estimator, n_hidden=16, n_chains=100, steps=60, burn_in=20, every=2, n_in=4, n_probes=2,
                   rank=1, alpha=1.0, rng=0, backend="auto", cell=None):
    """Measure an estimator's gradient noise and bias on one fixed trajectory.

    Parameters
    ----------
    estimator : str or callable
        A spec (see :func:`kfrtrl.train.make_estimator`, e.g. "name:k") or a callable
        ``(cell, batch_size, rng) -> estimator``.
    n_hidden, n_in : int >= 1
        The cell's state and input sizes.
    n_chains : int >= 2
        Independent chains N.
    steps : int >= 1
        Trajectory length.
    burn_in : int >= 0
        Steps before the first measurement.
    every : int >= 1
        Measure every this many steps after ``burn_in``.
    n_probes : int >= 1
        Gaussian probes per measured step for the G variance.
    rank : int >= 1
        The rank of an estimator taking one (``param`` "rank") when the spec has none.
    alpha : float
        The leak of the default Elman cell.
    rng : int or numpy.random.Generator
        One seed gives the same cell and trajectory for every estimator.
    backend : str
        Kernel backend of the estimator.
    cell : callable or None
        ``(n_in, n_hidden, rng) -> Cell`` (any cell and dtype), or None: an Elman cell (float64).

    Returns
    -------
    NoiseResult

    Notes
    -----
    Cost: the estimator's N-batch steps plus exact RTRL (O(n⁴) per step) plus
    N (1 + n_probes) gradient calls per measured step.

    References
    ----------
    The variances compared as in F. Benzing, M. M. Gauy, A. Mujika, A. Martinsson and
    A. Steger, "Optimal Kronecker-sum approximation of real time recurrent learning", ICML 2019,
    and T. Cooijmans and J. Martens, "On the variance of unbiased online recurrent
    optimization", 2019.
    """
    n_chains = check_int("n_chains", n_chains, 2)
    steps = check_int("steps", steps, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    every = check_int("every", every, 1)
    n_probes = check_int("n_probes", n_probes, 1)
    if burn_in + every > steps:
        raise ValueError(f"steps: expected at least burn_in + every = {burn_in + every} steps, got {steps}")
    cell_rng, data_rng, est_rng, probe_rng = as_generator(rng).spawn(4)
    cell = Elman(n_in, n_hidden, alpha=alpha, rng=cell_rng) if cell is None else cell(n_in, n_hidden, cell_rng)
    if callable(estimator):
        est, name = estimator(cell, n_chains, est_rng), getattr(estimator, "__name__", "custom")
    else:
        est, name = make_estimator(estimator, cell, n_chains, est_rng, backend, rank=rank), estimator
    exact = make_estimator(EXACT, cell, batch_size=1, backend="numpy")
    readout = Readout(n_hidden, n_in, cell.dtype, rng=data_rng)
    xs = np.eye(n_in, dtype=cell.dtype)[data_rng.integers(0, n_in, size=steps)][:, None, :]
    ys = data_rng.integers(0, n_in, size=(steps, 1))
    rows = []
    for t in range(1, steps + 1):
        h = exact.step(xs[t - 1])
        est.step(np.repeat(xs[t - 1], n_chains, axis=0))
        if t > burn_in and (t - burn_in) % every == 0:
            c = readout.backward(h, softmax_xent(readout(h), ys[t - 1])[1])[1]
            probes = probe_rng.standard_normal((n_probes, n_hidden)).astype(cell.dtype)
            rows.append((t,) + _measure(est, exact, c, probes))
    cols = [np.array(col) for col in zip(*rows)]
    return NoiseResult(name, n_hidden, n_chains, *cols)


def _measure(est, exact, c, probes):
    """-> (grad_err, grad_norm2, G_err, G_norm2, z, mean_err, mean_noise, cos) at one step;
    c (1, n), probes (K, n)."""
    N = est.batch_size
    g = per_sample_gradients(exact, c)[0]
    S = per_sample_gradients(est, np.repeat(c, N, axis=0))
    grad_err = float(np.mean(np.sum((S - g) ** 2, axis=1)))
    G_err = 0.0
    for q in probes:
        gq = per_sample_gradients(exact, q[None, :])[0]
        Sq = per_sample_gradients(est, np.repeat(q[None, :], N, axis=0))
        G_err += float(np.mean(np.sum((Sq - gq) ** 2, axis=1))) / len(probes)
    G_norm2 = float(sum(np.sum(exact.influence(k) ** 2) for k in exact.cell.params()))
    mean = S.mean(axis=0)
    mean_err = float(np.sum((mean - g) ** 2))
    mean_noise = float(S.var(axis=0, ddof=1).sum()) / N
    norms = float(np.linalg.norm(mean) * np.linalg.norm(g))
    cos = float(mean @ g) / norms if norms > 0.0 else np.nan
    return grad_err, float(np.sum(g * g)), G_err, G_norm2, z_statistic(S, g), mean_err, mean_noise, cos


def noise_vs_size(estimators, sizes, **kwargs):
    """:func:`gradient_noise` of every estimator at every size.

    Parameters
    ----------
    estimators : sequence of str, estimator specs
    sizes : sequence of int, hidden sizes
    **kwargs
        Further arguments of :func:`gradient_noise`; with a fixed ``rng`` seed all
        estimators of one size see the same cell and trajectory.

    Returns
    -------
    dict
        ``{(spec, n_hidden): NoiseResult}``.
    """
    return {(spec, n): gradient_noise(spec, n_hidden=n, **kwargs) for n in sizes for spec in estimators}
