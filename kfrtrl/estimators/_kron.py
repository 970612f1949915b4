"""What KF-RTRL and OK share: influence held as a sum of Kronecker terms per weight matrix."""
import numpy as np

from ._base import Estimator


class KroneckerSum(Estimator):
    """``G ≈ weight · Σ_i A_i ⊗ u_i`` per weight matrix; subclasses implement ``_propagate_fused``
    and ``_propagate_layers`` (see :class:`Estimator`).

    Subclasses set ``_n_terms`` (terms per sample) and ``_weight`` before
    ``super().__init__``. Storage per matrix (p, m): A (batch, terms, p, n_state)
    in tangent layout and u (batch, terms, m); all zero after a reset.
    """

    dense_immediate = True
    _state_attrs = ("_A", "_u")

    def tangents(self):
        """The Σ p_l rows of the A factors, per term."""
        return self._n_terms * sum(p for p, _ in self._shapes.values())

    def _allocate(self):
        B, T, N = self.batch_size, self._n_terms, self.cell.n_state
        self._A = {k: np.zeros((B, T, p, N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        self._u = {k: np.zeros((B, T, m), dtype=self.dtype) for k, (p, m) in self._shapes.items()}

    def _reset_influence(self, mask):
        for name in self._A:
            self._A[name][mask] = 0.0
            self._u[name][mask] = 0.0

    def _gradient(self, c):
        # Σ_bt (A_bt c_b) ⊗ u_bt: a batched matrix-vector product, then one small GEMM (BLAS);
        # the weight scales the small (B T, p) side, not the (p, m) result
        grads = {}
        for name in self._A:
            Ac = self._factor_products(name, c)
            B, T, p = Ac.shape
            Ac = Ac.reshape(B * T, p)
            if self._weight != 1.0:
                Ac = Ac * self._weight          # not in place: the products may be the step's own (OK)
            U = self._u[name].reshape(B * T, -1)
            grads[name] = Ac.T @ U if B * T > 1 else _outer(Ac[0], U[0])
        return grads

    def _factor_products(self, name, c):
        """(B, T, p): A_bt c_b, a batched matrix-vector product (one pass over the A factors)."""
        A = self._A[name]
        B, T, p, N = A.shape
        return np.matmul(A.reshape(B, T * p, N), c[:, :, None]).reshape(B, T, p)

    def factors(self, name):
        """The Kronecker factors of weight ``name``: G ≈ weight · Σ_i A_i ⊗ u_i.

        Parameters
        ----------
        name : str, a parameter name of the cell

        Returns
        -------
        A : (batch, terms, p, n_state) array: the estimator's own, or a copy where it holds them in
            another form (OK's fused step, O(r² p n_state) per sample to form)
        u : (batch, terms, m) array, the estimator's own
        """
        return self._factors(name)

    def _factors(self, name):
        return self._A[name], self._u[name]

    def influence(self, name):
        """The estimate of G for weight ``name`` as (batch, n_state, p, m) (materialised: tests only)."""
        A, u = self.factors(name)
        return np.einsum("btpn,btm->bnpm", A, u) * self._weight


_GER = {}


def ger(dtype):
    """scipy's BLAS rank-one update ``?ger(alpha, x, y, a)`` = a + alpha x yᵀ for ``dtype``
    (in place when ``a`` is Fortran-ordered and ``overwrite_a=True``)."""
    if dtype not in _GER:
        from scipy.linalg.blas import get_blas_funcs

        _GER[dtype] = get_blas_funcs("ger", dtype=dtype)
    return _GER[dtype]


def _outer(x, y):
    """x ⊗ y (p, m), C-contiguous, for x (p,) and y (m,) of one float dtype.

    One BLAS rank-one update of a zero matrix (``?ger``): the fastest measured way
    (OpenBLAS's GEMM with an inner dimension of 1 and numpy's einsum are slower; see
    docs/performance.md).
    """
    zeros = np.zeros((y.size, x.size), dtype=x.dtype, order="F")
    return ger(x.dtype)(1.0, y, x, a=zeros, overwrite_a=True).T
