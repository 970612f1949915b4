"""UORO: unbiased online recurrent optimisation (Tallec & Ollivier 2017).

Rank one over all parameters: ``G ≈ s ⊗ θ`` with s (n_state,) and θ holding
one array per weight matrix (shape of W). Per step, ν ∈ {±1}^N::

    s' = ρ0 H s + ρ1 ν,        θ' = θ / ρ0 + νᵀF / ρ1,   νᵀF = (Dᵀ ν) ⊗ a per matrix
    ρ0 = sqrt(|θ| / |H s|),    ρ1 = sqrt(|νᵀF| / |ν|)

The first term is dropped where |θ| |H s| = 0 (after a reset). Cost O(N·m)
per sample beyond the cell's own forward pass; no N×N×N work. For the Elman
cell the whole step is one kernel (``uoro_fused``: one matrix-vector product
and one pass over θ, which also yields |θ'| for the next step); for other
cells the θ update is one fused pass (``rank1_update``).
"""
import numpy as np

from .._reference.propagate import inverse_or_zero, ratio_root
from ._base import Estimator
from ._registry import register


@register
class UORO(Estimator):
    """UORO: unbiased online recurrent optimisation, a rank-one estimate of the influence.

    The influence over all parameters is kept as one outer product ``G ≈ s ⊗ θ`` per sample,
    s (n_state,) and θ one array per weight matrix, updated with fresh random signs ν each
    step so that E[s ⊗ θ] is the exact influence; ``gradient`` returns ((∂L_t/∂s_t)·s) θ.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]

    Notes
    -----
    Cost per step and sample: O(N m) time and memory beyond the cell's own forward pass, O(n²)
    for the Elman cell (one fused kernel: one matrix-vector product and one pass over θ).
    Unbiased but noisy: the variance grows with n (README, "Gradient noise against n").

    [step and gradient]

    References
    ----------
    C. Tallec and Y. Ollivier, "Unbiased Online Recurrent Optimization", ICLR 2018
    (arXiv:1702.05043).

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> est = kfrtrl.UORO(cell, batch_size=3, rng=1)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "uoro"
    auto_backends = ("numba", "cython")     # numba and cython within a few percent; numba needs no build
    _state_attrs = ("_v", "_w", "_w_sq")
    fused_blocks = 1                   # uoro_fused: Elman-type steps only

    def _allocate(self):
        B, N = self.batch_size, self.cell.n_state
        self._v = np.zeros((B, N), dtype=self.dtype)
        self._w = {k: np.zeros((B, p, m), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        self._w_sq = np.zeros(B)           # |θ_b|² in float64, kept up to date by the fused step

    def tangents(self):
        """One: s."""
        return 1

    def _reset_influence(self, mask):
        self._v[mask] = 0.0
        self._w_sq[mask] = 0.0
        for w in self._w.values():
            w[mask] = 0.0

    def _propagate_fused(self, name, lam, dz, a):
        """The Elman-type step in one kernel (``uoro_fused``), keeping |θ|² up to date."""
        nu = self._draw_signs(self._v.shape)
        W = self.cell.params()[name]
        self.ops.uoro_fused(self._v, self._w[name], self._w_sq, W, lam, dz[:, 0], a, nu, self.n_threads)
        self._check_factors(self._v, self._w_sq)

    def _propagate_layers(self, cache):
        """Any cell: H v by the cell's jvp, νᵀF by its reverse sweep, then ``rank1_update``."""
        B, N = self.batch_size, self.cell.n_state
        Hv = self.cell.jvp(cache, self._v[:, None, :], self.ops, self.n_threads)[:, 0]
        nu = self._draw_signs((B, N))
        nuF = self.cell.backward(cache, nu, state=False)[1]     # νᵀF = (Dᵀ ν) ⊗ a per matrix, O(N m)
        n_w = _norm_over(self._w.values())
        n_f = np.sqrt(sum(np.vecdot(d, d) * np.vecdot(a, a) for d, a in nuF.values()))
        rho0 = ratio_root(n_w, np.linalg.norm(Hv, axis=1))
        rho1 = ratio_root(n_f, np.full(B, np.sqrt(N), dtype=self.dtype))
        self._v = rho0[:, None] * Hv + rho1[:, None] * nu
        inv0, inv1 = (inverse_or_zero(rho).astype(self.dtype, copy=False) for rho in (rho0, rho1))
        for k, (d, a) in nuF.items():
            self.ops.rank1_update(self._w[k], inv0, d, a, inv1, self._w[k], self.n_threads)
        self._check_factors(self._v)

    def _gradient(self, c):
        coef = np.einsum("bn,bn->b", self._v, c)
        return {k: np.einsum("b,bpm->pm", coef, w) for k, w in self._w.items()}


def _norm_over(arrays):
    """Per-sample Frobenius norm over several (B, ...) arrays -> (B,)."""
    flat = [x.reshape(x.shape[0], -1) for x in arrays]
    return np.sqrt(sum(np.vecdot(x, x) for x in flat))
