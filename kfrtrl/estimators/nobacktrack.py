"""NoBackTrack (Ollivier, Tallec & Charpiat 2015): the rank-one estimator (its filter is an optimizer).

Rank one, ``G ≈ v ⊗ w`` (w one array per weight matrix), like UORO, but the
immediate term is split per state unit, ``F = Σ_i e_i ⊗ F_i`` with F_i the
influence of z on unit i (for the Elman cell: row i of W gets D_ii a), each
with its own sign ε_i and scale ρ_i::

    v' = ε0 ρ0 H v + Σ_i ε_i ρ_i e_i,     w' = ε0 w / ρ0 + Σ_i ε_i F_i / ρ_i
    ρ0² = |w| / |H v|,                     ρ_i² = |F_i| / |e_i| = |F_i|

Σ_i (ε_i / ρ_i) F_i is ``(D (ε / ρ)) ⊗ a`` per matrix, so a step costs O(N·m)
per sample, like UORO. The paper's optional Kalman-like preconditioning of
the gradient is the trainer's ``optimizer="kalman"`` (:class:`kfrtrl.optim.KalmanFilter`).
"""
import numpy as np

from .._reference.propagate import inverse_or_zero, ratio_root
from ._registry import register
from .uoro import UORO, _norm_over


@register
class NoBackTrack(UORO):
    """NoBackTrack: a rank-one unbiased influence estimate with per-unit random signs.

    Like :class:`UORO` (``G ≈ v ⊗ w``), but the immediate term is split per state unit, each
    part with its own sign and scale, which lowers the variance a little. The paper's
    optional Kalman-like preconditioning of the gradient is the trainer's ``optimizer="kalman"``
    (:class:`kfrtrl.optim.KalmanFilter`), not part of this class.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]

    Notes
    -----
    Cost per step and sample: O(N m) time and memory beyond the forward pass, O(n²) for the
    Elman cell, like UORO.

    [step and gradient]

    References
    ----------
    Y. Ollivier, C. Tallec and G. Charpiat, "Training recurrent networks online without
    backtracking", arXiv:1507.07680, 2015.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> est = kfrtrl.NoBackTrack(cell, batch_size=3, rng=1)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "nobacktrack"
    fused_blocks = 0                   # its own _propagate: no fused kernel

    def _propagate(self, cache):
        B, N = self.batch_size, self.cell.n_state
        imm = self.cell.immediate(cache, self.ops, self.n_threads)
        Hv = self.cell.jvp(cache, self._v[:, None, :], self.ops, self.n_threads)[:, 0]
        eps0 = self._draw_signs((B,))
        eps = self._draw_signs((B, N))
        # |F_i|² = Σ_matrices |D[:, i]|² |a|²  (column i of D = row... of Dt: Dt[:, :, i])
        f2 = sum(np.sum(Dt * Dt, axis=1) * np.sum(a * a, axis=1)[:, None] for Dt, a in imm.values())
        rho = np.sqrt(np.sqrt(f2))
        coef = np.where(rho > 0, eps / np.where(rho > 0, rho, 1.0), 0.0).astype(self.dtype)
        rho0 = ratio_root(_norm_over(self._w.values()), np.linalg.norm(Hv, axis=1))
        self._v = (eps0 * rho0)[:, None] * Hv + eps * rho
        s_w = inverse_or_zero(rho0).astype(self.dtype, copy=False) * eps0   # exact: eps0 = ±1
        ones = np.ones(B, dtype=self.dtype)
        for k, (Dt, a) in imm.items():
            d = np.einsum("bpn,bn->bp", Dt, coef)
            self.ops.rank1_update(self._w[k], s_w, d, a, ones, self._w[k], self.n_threads)
        self._check_factors(self._v)
