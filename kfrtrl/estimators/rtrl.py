"""Exact real-time recurrent learning (Williams & Zipser 1989).

Carries the full influence ``G_t = ∂s_t/∂W`` for each weight matrix:
``G_t = H_t G_{t-1} + F_t``, ``F_t = D_t ⊗ a_t``.
Per sample O(N·p·m) memory and O(N²·p·m) time (n³ and n⁴ for the Elman cell).
"""
import numpy as np

from ._base import Estimator


class RTRL(Estimator):
    """Exact RTRL. Influence per weight matrix: G (batch, p, m, n_state) in tangent layout."""

    name = "rtrl"

    def _allocate(self):
        B, N = self.batch_size, self.cell.n_state
        self._G = {k: np.zeros((B, p, m, N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        # H G is written into a spare buffer, then the two swap roles (no fresh multi-MB array per step)
        self._spare = {k: np.empty_like(G) for k, G in self._G.items()}

    def _reset_influence(self, mask):
        for G in self._G.values():
            G[mask] = 0.0

    def _propagate(self, cache):
        imm = self.cell.immediate(cache, self.ops, self.n_threads)
        B, N = self.batch_size, self.cell.n_state
        for name, G in self._G.items():
            _, p, m, _ = G.shape
            HG = self._spare[name]
            self.cell.jvp(cache, G.reshape(B, p * m, N), self.ops, self.n_threads, out=HG.reshape(B, p * m, N))
            Dt, a = imm[name]
            self.ops.outer_add(HG, Dt, a, self.n_threads)
            self._G[name], self._spare[name] = HG, G

    def _gradient(self, c):
        grads = {}
        for name, G in self._G.items():                  # Σ_b G_b c_b, a batched matrix-vector product
            B, p, m, N = G.shape
            grads[name] = np.matmul(G.reshape(B, p * m, N), c[:, :, None]).sum(axis=0).reshape(p, m)
        return grads

    def influence(self, name):
        """Exact G for weight ``name`` as (batch, n_state, p, m): G[b, k, i, j] = ∂s_k/∂W_ij."""
        return np.moveaxis(self._G[name], 3, 1).copy()
