"""OK: optimal Kronecker-sum approximation (Benzing et al. 2019).

``G ≈ Σ_{i=1..r} A_i ⊗ u_i`` per weight matrix. One step gives r + 1 terms,
``(H A_i, u_i)`` and ``(D, a)``; the reduction back to r terms is the optimal
unbiased one (QR of both factor stacks, SVD of the (r+1)² core, keep the
large singular pairs, mix the rest with random signs; see
:func:`kfrtrl._reference.kernels.ok_reduce`). Exact for the first r steps
after a reset. Cost O(r N² p + r² N p) per sample, memory O(r N p).
"""
import numpy as np

from .._validation import check_int
from ._base import Estimator


class OK(Estimator):
    """OK estimator of rank ``rank`` (>= 1)."""

    name = "ok"

    def __init__(self, cell, rank=1, batch_size=1, rng=None, backend="auto", n_threads=None):
        self.rank = check_int("rank", rank, 1)
        super().__init__(cell, batch_size, rng, backend, n_threads)

    def _allocate(self):
        B, r, N = self.batch_size, self.rank, self.cell.n_state
        self._A = {k: np.zeros((B, r, p, N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        self._u = {k: np.zeros((B, r, m), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        # reused work buffers: H A_i, then the r+1 terms before each reduction (a fresh
        # multi-MB array per step costs more in page faults than the copy into it)
        self._HA = {k: np.empty((B, r * p, N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        self._V = {k: np.empty((B, r + 1, p * N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}

    def _reset_influence(self, mask):
        for name in self._A:
            self._A[name][mask] = 0.0
            self._u[name][mask] = 0.0

    def _propagate(self, cache):
        imm = self.cell.immediate(cache, self.ops, self.n_threads)
        B, r, N = self.batch_size, self.rank, self.cell.n_state
        for name, A in self._A.items():
            p = A.shape[2]
            Dt, a = imm[name]
            V = self._V[name]
            HA = self.cell.jvp(cache, A.reshape(B, r * p, N), self.ops, self.n_threads, out=self._HA[name])
            V[:, :r] = HA.reshape(B, r, p * N)
            V[:, r] = Dt.reshape(B, p * N)
            U = np.concatenate([self._u[name], a[:, None]], axis=1)
            signs = self._draw_signs((B, r + 1))
            self.ops.ok_reduce(V, U, signs, A.reshape(B, r, p * N), self._u[name], self.n_threads)
            self._check_factors(self._u[name])

    def _gradient(self, c):
        return {
            name: np.einsum("brp,brm->pm", np.einsum("brpn,bn->brp", A, c), self._u[name])
            for name, A in self._A.items()
        }

    def influence(self, name):
        """The estimate of G for weight ``name`` as (batch, n_state, p, m) (materialised: tests only)."""
        return np.einsum("brpn,brm->bnpm", self._A[name], self._u[name])
