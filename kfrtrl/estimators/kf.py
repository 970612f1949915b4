"""KF-RTRL (Mujika, Meier & Steger 2018): one Kronecker factor per weight matrix.

``G ≈ A ⊗ u`` with A (p, n_state) in tangent layout and u (m,). Per step,
with independent signs c1, c2 (per sample, chain, matrix and step)::

    A' = c1 H A / p1 + c2 D / p2,     u' = c1 p1 u + c2 p2 a,
    p1 = sqrt(|H A| / |u|),           p2 = sqrt(|D| / |a|)

Unbiased: E[A' ⊗ u'] = H (A ⊗ u) + D ⊗ a. At reset the factors are zero, so
the first step gives A ⊗ u = D ⊗ a exactly. ``n_chains = r`` averages r
independent chains (variance / r): the baseline OK is compared with.
Cost O(N²·p) per sample and chain (n³ for the Elman cell), memory O(N·p).
"""
import numpy as np

from .._validation import check_int
from ._kron import KroneckerSum
from ._registry import register


@register
class KFRTRL(KroneckerSum):
    """KF-RTRL: Kronecker-factored RTRL, an unbiased Kronecker-product estimate of the influence.

    Per weight matrix W (p, m) the influence is ``G ≈ A ⊗ u`` with A (p, n_state) and u (m,);
    each step mixes the propagated term (H A, u) and the immediate term (D, a) with random
    signs so that E[A ⊗ u] is exact. With ``n_chains = C``, C independent chains are
    averaged (variance / C).

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]
    n_chains : int >= 1
        Independent chains averaged (spec ``"kf:C"``; default 1, the paper's method).

    Notes
    -----
    Cost per step and sample: O(C N² p) time and O(C N (p + m)) memory; O(n³) time and O(n²)
    memory for the Elman cell (one fused kernel per matrix: a GEMM and the merge). Variance
    roughly constant in n.

    [step and gradient]

    References
    ----------
    A. Mujika, F. Meier and A. Steger, "Approximating Real-Time Recurrent Learning with Random
    Kronecker Factors", NeurIPS 2018 (arXiv:1805.10842).

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> est = kfrtrl.KFRTRL(cell, batch_size=3, rng=1, n_chains=2)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "kf"
    param = "n_chains"
    auto_backends = ("numba", "cython")     # numba and cython within a few percent; numba needs no build
    fused_blocks = None                # kf_fused/ok_fused: any number of diagonal blocks

    def __init__(self, cell, batch_size=1, rng=None, backend="auto", n_threads=None, n_chains=1):
        self.n_chains = self._n_terms = check_int("n_chains", n_chains, 1)
        self._weight = 1.0 / self.n_chains
        super().__init__(cell, batch_size, rng, backend, n_threads)

    def _allocate(self):
        super()._allocate()
        # H A is written into a spare buffer (merged there in place on the general path),
        # then the two swap roles: a fresh multi-MB array per step costs more in page faults
        # than a pass. D (general path only) gets its own buffer, zeroed once (immediate
        # writes only its nonzero blocks), allocated at the first step that needs it.
        self._spare = {k: np.empty_like(A) for k, A in self._A.items()}
        self._Dt = None

    def _propagate_fused(self, name, lam, dz, a):
        """The Elman-type step: propagation and merge in one kernel (``kf_fused``)."""
        A, out, u = self._A[name], self._spare[name], self._u[name]
        c1, c2 = self._draw_signs((2, self.batch_size, self.n_chains))
        self.ops.kf_fused(A, u, self.cell.params()[name], lam, dz, a, c1, c2, out, u, self.n_threads)
        self._A[name], self._spare[name] = out, A
        self._check_factors(u)

    def _propagate_layers(self, cache):
        """Any cell: H A by the cell's jvp, then the merge with the immediate term (``kf_combine``)."""
        B, C, N = self.batch_size, self.n_chains, self.cell.n_state
        if self._Dt is None:
            self._Dt = {k: np.zeros((B, p, N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        imm = self.cell.immediate(cache, self.ops, self.n_threads, out=self._Dt)
        for name, A in self._A.items():
            p = A.shape[2]
            HA = self._spare[name]
            self.cell.jvp(cache, A.reshape(B, C * p, N), self.ops, self.n_threads, out=HA.reshape(B, C * p, N))
            c1, c2 = self._draw_signs((2, B, C))         # one draw, not two: per-call overhead dominates at small n
            Dt, a = imm[name]
            self.ops.kf_combine(HA, self._u[name], Dt, a, c1, c2, HA, self._u[name], self.n_threads)
            self._A[name], self._spare[name] = HA, A
            self._check_factors(self._u[name])
