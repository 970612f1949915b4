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
    """UORO estimator (batch-aware: each sample its own s, θ and signs)."""

    name = "uoro"
    auto_backends = ("numba", "cython")     # numba and cython within a few percent; numba needs no build
    _state_attrs = ("_v", "_w", "_w_sq")

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
        self.ops.uoro_fused(self._v, self._w[name], self._w_sq, W, lam, dz, a, nu, self.n_threads)
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
