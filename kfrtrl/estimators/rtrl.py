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
from ._kron import ger
from ._registry import register


@register
class RTRL(Estimator):
    """Exact real-time recurrent learning: the full influence matrix, carried forward.

    For every weight matrix W (p, m) the influence G = ∂s_t/∂W (batch, p, m, n_state) follows
    ``G_t = H_t G_{t-1} + D_t ⊗ a_t`` and ``gradient`` returns (∂L_t/∂s_t) G_t: the exact
    gradient, the same as :func:`kfrtrl.bptt` accumulated online.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]
    elementwise : None, True or False
        None carries the element-wise influence when the cell is element-wise
        (:class:`kfrtrl.ELSTM`, :class:`kfrtrl.LRU`, a :class:`kfrtrl.Stack` of them) and the
        dense one otherwise; True requires an element-wise cell; False forces the dense one.

    Notes
    -----
    Cost per step and sample: O(N² p m) time and O(N p m) memory (N = n_state); for the Elman
    cell with n units O(n⁴) time and O(n³) memory. Element-wise cells: O(n m), the cost of the
    forward pass.

    [step and gradient]

    References
    ----------
    R. J. Williams and D. Zipser, "A learning algorithm for continually running fully recurrent
    neural networks", Neural Computation 1(2):270-280, 1989.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> est = kfrtrl.RTRL(cell, batch_size=3)
    >>> h = est.step(np.ones((3, 2)))                     # (3, 4)
    >>> est.gradient(np.ones((3, 4)))["W"].shape          # W is (4, 4 + 2 + 1)
    (4, 7)
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
    def forms_jacobian(self):
        """The dense influence goes through the formed step Jacobian (:meth:`Cell.jacobian_t`) every step."""
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
        # state-major, G[b, k] = ∂s_k/∂W (N, p, m): H G is then the wide (N, N) @ (N, p m) GEMM,
        # which BLAS runs ~20 % faster than the tall product of the tangent layout (docs/performance.md)
        self._G = {k: np.zeros((B, N, p, m), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
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
        diagonal = self.cell.diagonal_step(cache)
        imm = None if diagonal is not None else self.cell.immediate(cache, self.ops, self.n_threads)
        Ht = self.cell.jacobian_t(cache, self.ops, self.n_threads)
        B, N = self.batch_size, self.cell.n_state
        for name, G in self._G.items():
            _, _, p, m = G.shape
            HG = self._spare[name]
            self.ops.jvp_state(Ht, G.reshape(B, N, p * m), HG.reshape(B, N, p * m), self.n_threads)
            if diagonal is not None:
                _add_diagonal_immediate(HG, diagonal[2], diagonal[3])
            else:
                _add_immediate(HG, *imm[name])
            self._G[name], self._spare[name] = HG, G

    def _gradient(self, c):
        if self.elementwise:
            return self._ew.gradient(self._cache, c, self.n_threads)
        grads = {}
        for name, G in self._G.items():                  # Σ_b c_b G_b, a batched vector-matrix product
            B, N, p, m = G.shape
            grads[name] = np.matmul(c[:, None, :], G.reshape(B, N, p * m)).sum(axis=0).reshape(p, m)
        return grads

    def influence(self, name):
        """Exact G for weight ``name`` as (batch, n_state, p, m): G[b, k, i, j] = ∂s_k/∂W_ij.

        With the element-wise influence: weights of the recurrent layer only, as
        (batch, Z, n, m), the nonzero entries ``∂r[k]/∂W[z n + k, :]``.

        Parameters
        ----------
        name : str, a parameter name of the cell

        Returns
        -------
        array of the cell's dtype
        """
        if self.elementwise:
            return self._ew.E[name].copy()
        return self._G[name].copy()


def _add_immediate(G, Dt, a):
    """G[b, k, i, j] += Dt[b, i, k] a[b, j] in place (G (B, N, p, m) state-major, Dt (B, p, N),
    a (B, m)): per sample one BLAS rank-one update of G_b seen as (N p, m), no temporary."""
    B, N, p, m = G.shape
    update = ger(G.dtype)
    for b in range(B):
        target = G[b].reshape(N * p, m).T                  # (m, N p), Fortran-ordered: updated in place
        update(1.0, a[b], np.ascontiguousarray(Dt[b].T).reshape(N * p), a=target, overwrite_a=True)


def _add_diagonal_immediate(G, dz, a):
    """G += D ⊗ a in place for an immediate term of diagonal blocks (``Cell.diagonal_step``):
    G[b, t, z N + t, j] += dz[b, z, t] a[b, j], the only nonzero entries, so B Z N m of them
    are touched instead of a pass over G. G (B, N, Z N, m), state-major; dz (B, Z, N); a (B, m)."""
    B, Z, N = dz.shape
    t = np.arange(N)
    G.reshape(B, N, Z, N, a.shape[1])[:, t, :, t, :] += np.einsum("bzt,bj->tbzj", dz, a)
