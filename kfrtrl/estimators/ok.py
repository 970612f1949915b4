"""OK: optimal Kronecker-sum approximation (Benzing et al. 2019).

``G ≈ Σ_{i=1..r} A_i ⊗ u_i`` per weight matrix. One step gives r + 1 terms,
``(H A_i, u_i)`` and ``(D, a)``; the reduction back to r terms is the optimal
unbiased one (QR of both factor stacks, SVD of the (r+1)² core, keep the
large singular pairs, mix the rest with random signs; see
:func:`kfrtrl._reference.reduce.ok_reduce`). Exact for the first r steps
after a reset. Cost O(r N² p + r² N p) per sample, memory O(r N p).
"""
import numpy as np

from .._reference.reduce import ok_factors
from .._validation import check_int
from ..cells import Cell
from ._kron import KroneckerSum
from ._registry import register


@register
class OK(KroneckerSum):
    """OK: the optimal Kronecker-sum approximation of the influence, of rank r.

    Per weight matrix the influence is ``G ≈ Σ_{i=1..r} A_i ⊗ u_i``. A step gives r + 1 terms
    (H A_i, u_i) and (D, a); they are reduced back to r by the optimal unbiased reduction (QR
    of both factor stacks, SVD of the (r+1)×(r+1) core, the large singular pairs kept, the
    rest mixed with random signs). Exact for the first r steps after a reset.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]
    rank : int >= 1
        r, the number of Kronecker terms (spec ``"ok:r"``).

    Notes
    -----
    Cost per step and sample: O(r N² p + r² N (p + m)) time and O(r N p) memory; O(r n³) time
    and O(r n²) memory for the Elman cell (one fused kernel per matrix). Variance well below
    KF-RTRL's at the same cost order, falling fast with r.

    [step and gradient]

    References
    ----------
    F. Benzing, M. M. Gauy, A. Mujika, A. Martinsson and A. Steger, "Optimal Kronecker-Sum
    Approximation of Real Time Recurrent Learning", ICML 2019 (arXiv:1902.03993).

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> est = kfrtrl.OK(cell, rank=2, batch_size=3, rng=1)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "ok"
    param = "rank"
    auto_backends = ("cython", "numba")     # cython's fused step is ahead at small n and at large r·n
    fused_blocks = None                # kf_fused/ok_fused: any number of diagonal blocks
    _state_attrs = ("_A", "_u", "_C", "_dzp")

    def __init__(self, cell, rank=1, batch_size=1, rng=None, backend="auto", n_threads=None):
        self.rank = self._n_terms = check_int("rank", rank, 1)
        if isinstance(cell, Cell) and self.rank > max_rank(cell):
            raise ValueError(f"rank: expected an integer in [1, {max_rank(cell)}] (no influence of this "
                             f"{type(cell).__name__} has a higher Kronecker rank), got {rank}")
        self._weight = 1.0
        super().__init__(cell, batch_size, rng, backend, n_threads)

    def _allocate(self):
        super()._allocate()
        # the fused path holds the factors deferred, F_i = Σ_j C_ij A_j + C_ir D(dzp): the
        # reduction's recombination runs in cache at the next step (``ok_fused``); None: the
        # factors are A itself. Its u's go to a spare that swaps roles with u; the general
        # path builds the r+1 terms in _V (all allocated at the first step that needs them:
        # a fresh multi-MB array per step costs more in page faults than a pass)
        self._C = self._dzp = None
        self._u_spare = self._V = None
        self._products = None           # (c, name, F c (B, r, p)) of the last fused step, or None

    def _factors(self, name):
        """(A, u) with the deferred factors recombined (a copy)."""
        if self._C is None:
            return super()._factors(name)
        return ok_factors(self._A[name], self._C[name], self._dzp[name]), self._u[name]

    def _propagate_fused(self, name, lam, dz, a):
        """The Elman-type step: propagation and reduction in one kernel (``ok_fused``)."""
        if self._u_spare is None:
            self._u_spare = {k: np.empty_like(u) for k, u in self._u.items()}
        if self._C is None:
            B, r = self.batch_size, self.rank
            self._C = {k: np.tile(np.eye(r, r + 1, dtype=self.dtype), (B, 1, 1)) for k in self._A}
            self._dzp = {k: np.zeros((B, p // self.cell.n_state, self.cell.n_state), dtype=self.dtype)
                         for k, (p, m) in self._shapes.items()}
        u, u_out = self._u[name], self._u_spare[name]
        signs = self._draw_signs((self.batch_size, self.rank + 1))
        c, Fc = self._cotangent, None
        if c is not None:                       # the gradient's products, taken in the same pass
            Fc = np.empty(self._A[name].shape[:3], dtype=self.dtype)
            self._products = (c, name, Fc)
        self.ops.ok_fused(self._A[name], self._C[name], self._dzp[name], u, self.cell.params()[name],
                          lam, dz, a, signs, c, u_out, Fc, self.n_threads)
        self._u[name], self._u_spare[name] = u_out, u
        self._check_factors(u_out, self._C[name])

    def _recombine(self):
        """Hold the factors as they are (A = F, no C): what the general path and tests read."""
        if self._C is not None:
            for name in self._A:
                self._A[name] = self.factors(name)[0]
            self._C = self._dzp = None

    def _propagate_layers(self, cache):
        """Any cell: the r+1 terms (H A_i by the cell's jvp, and the immediate term), then ``ok_reduce``."""
        self._recombine()
        B, r, N = self.batch_size, self.rank, self.cell.n_state
        if self._V is None:
            # H A_i written straight into the first r rows, the immediate term D into the
            # last (zeroed once: immediate writes only D's nonzero blocks there)
            self._V = {k: np.zeros((B, r + 1, p * N), dtype=self.dtype) for k, (p, m) in self._shapes.items()}
        last_rows = {name: V[:, r].reshape(B, -1, N) for name, V in self._V.items()}
        imm = self.cell.immediate(cache, self.ops, self.n_threads, out=last_rows)    # Dt into V[:, r]
        for name, A in self._A.items():
            p = A.shape[2]
            a = imm[name][1]
            V = self._V[name]
            HA = V.reshape(B, (r + 1) * p, N)[:, :r * p]             # a view: each sample's rows contiguous
            self.cell.jvp(cache, A.reshape(B, r * p, N), self.ops, self.n_threads, out=HA)
            U = np.concatenate([self._u[name], a[:, None]], axis=1)
            signs = self._draw_signs((B, r + 1))
            self.ops.ok_reduce(V, U, signs, A.reshape(B, r, p * N), self._u[name], self.n_threads)
            self._check_factors(self._u[name])

    def _reset_influence(self, mask):
        super()._reset_influence(mask)
        self._products = None
        if self._dzp is not None:
            for dzp in self._dzp.values():
                dzp[mask] = 0.0                 # with A = 0 the factors are 0 whatever C holds

    def _propagate(self, cache):
        self._products = None
        super()._propagate(cache)

    def _factor_products(self, name, c):
        """(B, r, p): F_i c per sample: the fused step's own when it was given this c (no pass
        over the factors), else from the deferred factors without recombining them:
        Σ_j C_ij (A_j c) + C_ir (D(dzp) c), D(dzp) c = dzp_z ⊙ c per block."""
        if self._products is not None and self._products[1] == name and np.array_equal(c, self._products[0]):
            return self._products[2]
        if self._C is None:
            return super()._factor_products(name, c)
        Ac = super()._factor_products(name, c)
        C, dzp = self._C[name], self._dzp[name]
        r = self.rank
        Dc = (dzp * c[:, None, :]).reshape(self.batch_size, 1, -1)
        return np.matmul(C[:, :, :r], Ac) + C[:, :, r:] * Dc

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output, also one whose factors are held as they are
        (no ``_C``, ``_dzp``: saved before the fused step held them deferred).

        Parameters
        ----------
        state : dict, as :meth:`state_dict` returns
        """
        if "_C" not in state["influence"]:
            state = dict(state, influence=dict(state["influence"], _C=None, _dzp=None))
        super().load_state_dict(state)
        self._products = None


def max_rank(cell):
    """The largest Kronecker rank of an influence of ``cell``: max over its weights (p, m) of
    min(p · n_state, m) (G as a (p n_state) × m matrix); OK with a higher rank only wastes memory.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell

    Returns
    -------
    int
    """
    return max(min(p * cell.n_state, m) for p, m in cell.param_shapes().values())
