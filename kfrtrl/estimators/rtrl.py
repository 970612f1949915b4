"""Exact real-time recurrent learning (Williams & Zipser 1989).

Carries the full influence ``G_t = ∂s_t/∂W`` for each weight matrix:
``G_t = H_t G_{t-1} + F_t``, ``F_t = D_t ⊗ a_t``.
Per sample O(N·p·m) memory and O(N²·p·m) time (n³ and n⁴ for the Elman cell).

On an element-wise cell (:class:`kfrtrl.ELSTM`, :class:`kfrtrl.LRU`) and on a
:class:`kfrtrl.Stack` of them it carries only the nonzero entries, one row of
parameters per unit (:mod:`kfrtrl.estimators._elementwise`): O(n·m) time and
memory per step, the cost of the forward pass.
"""
import numpy as np

from ._base import Estimator
from ._elementwise import ElementwiseInfluence
from ._registry import register


@register
class RTRL(Estimator):
    """Exact RTRL. Influence per weight matrix: G (batch, p, m, n_state) in tangent layout.

    ``elementwise``: None (default) carries the element-wise influence when the
    cell is element-wise (``cell.elementwise``), the dense one otherwise; True
    requires an element-wise cell (TypeError otherwise); False forces the dense
    influence (not possible for a Stack).
    """

    name = "rtrl"
    auto_backends = ("numba", "cython")     # numba and cython within a few percent; numba needs no build
    stacks = True                           # exact per layer through its element-wise influence

    def __init__(self, cell, batch_size=1, rng=None, backend="auto", n_threads=None, elementwise=None):
        capable = getattr(cell, "elementwise", False)
        if elementwise not in (None, True, False):
            raise TypeError(f"elementwise: expected None, True or False, got {elementwise!r}")
        if elementwise and not capable:
            raise TypeError(f"cell: elementwise RTRL needs an element-wise cell (kfrtrl.ELSTM, kfrtrl.LRU or a "
                            f"kfrtrl.Stack of them), got {type(cell).__name__}")
        if elementwise is False and hasattr(cell, "cells"):
            raise ValueError("elementwise: a Stack has only the element-wise RTRL (True or None), got False")
        self.elementwise = capable if elementwise is None else elementwise
        super().__init__(cell, batch_size, rng, backend, n_threads)

    @property
    def dense_immediate(self):
        """The dense influence carries every layer's immediate term as tangents; the element-wise one none."""
        return not self.elementwise

    @property
    def _state_attrs(self):
        return ("_E",) if self.elementwise else ("_G",)

    @property
    def _E(self):
        """The element-wise influence {name: (batch, Z, n, m)} (held by its ElementwiseInfluence)."""
        return self._ew.E

    @_E.setter
    def _E(self, value):
        self._ew.E = value

    def config(self):
        return dict(super().config(), elementwise=self.elementwise)

    def tangents(self):
        """All Σ p_l·m_l columns of G; element-wise: one cotangent through the readout, no tangent."""
        return 1 if self.elementwise else sum(p * m for p, m in self._shapes.values())

    def _allocate(self):
        if self.elementwise:
            self._ew = ElementwiseInfluence(self.cell, self.batch_size, self.ops)
            return
        B, N = self.batch_size, self.cell.n_state
        self._G = {k: np.zeros((B, p, m, N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        # H G is written into a spare buffer, then the two swap roles (no fresh multi-MB array per step)
        self._spare = {k: np.empty_like(G) for k, G in self._G.items()}

    def _reset_influence(self, mask):
        if self.elementwise:
            self._ew.reset(mask)
            return
        for G in self._G.values():
            G[mask] = 0.0

    def _propagate(self, cache):
        if self.elementwise:
            self._ew.propagate(cache, self.n_threads)
            return
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
        if self.elementwise:
            return self._ew.gradient(self._cache, c, self.n_threads)
        grads = {}
        for name, G in self._G.items():                  # Σ_b G_b c_b, a batched matrix-vector product
            B, p, m, N = G.shape
            grads[name] = np.matmul(G.reshape(B, p * m, N), c[:, :, None]).sum(axis=0).reshape(p, m)
        return grads

    def influence(self, name):
        """Exact G for weight ``name`` as (batch, n_state, p, m): G[b, k, i, j] = ∂s_k/∂W_ij.

        With the element-wise influence: weights of the recurrent layer only, as
        (batch, Z, n, m), the nonzero entries ``∂r[k]/∂W[z n + k, :]``.
        """
        if self.elementwise:
            return self._ew.E[name].copy()
        return np.moveaxis(self._G[name], 3, 1).copy()
