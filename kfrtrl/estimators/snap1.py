"""SnAp-1 (Menick et al. 2021): the influence kept only where a parameter reaches in one step.

A weight row i of a layer writes one pre-activation unit u = i mod n (the
layers' outputs are blocks of n units, see :mod:`kfrtrl.cells`), and that
unit's pre-activation writes, in one step, the S state entries of unit u
(one per state block: h for the Elman cell and the RHN, c and h for the
LSTM). SnAp-1 keeps exactly those entries of ``G = ∂s_t/∂W``::

    G[b, i, j, :] = T_t[b, u] G[b, i, j, :] + D_t[b, i] a_t[b, j]

with ``T_t[u]`` (S, S) the unit-u block of the step Jacobian and ``D_t[i]``
row i's one-step influence on unit u's entries. Both follow from the cell's
layer description alone: each layer contributes its unit block
``Λ_l[u] + D_l[u] R_l[u]`` (``R_l[u]``: the diagonal entries of its
recurrent weights that read unit u), and the blocks of a step multiply.

Element-wise cells (``cell.elementwise``: :class:`kfrtrl.ELSTM`,
:class:`kfrtrl.LRU`) declare a recurrent layer with state r and a readout that
is not fed back; there the pattern is taken on r (one entry per weight row:
the cell's ``recurrent_terms``) and the readout is back-propagated exactly
within the step (``readout_backward``), as exact RTRL does. Their recurrence
being diagonal, SnAp-1 is then exact RTRL.

Equal to exact RTRL on cells whose step Jacobian has no off-unit entries
(element-wise recurrence); biased on dense cells. For a one-layer cell it is
Menick et al.'s SnAp-1 (a masked dense RTRL); for cells of several layers
(the GRU, a deep RHN) a path that leaves unit u through a later layer's
recurrent matrix within the step is dropped too (kept, it would make the
pattern dense). Cost O(S² · parameters) per sample and step, memory
O(S · parameters): O(n²) for the Elman cell.
"""
import numpy as np

from ._base import Estimator
from ._registry import register


@register
class SnAp1(Estimator):
    """SnAp-1: the sparse n-step approximation of RTRL at n = 1, deterministic.

    Keeps, for every weight W_ij, only its influence on the unit it feeds directly (the
    influence pattern after one step), and propagates that with the diagonal of the step
    Jacobian: biased, but cheap and with no random signs.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]

    Notes
    -----
    Cost per step and sample: O(p m S) time and memory (S = n_state / n_hidden state blocks),
    O(n²) for the Elman cell: the cost of the forward pass. ``rng`` is accepted for a uniform
    signature and unused.

    [step and gradient]

    References
    ----------
    J. Menick, E. Elsen, U. Evci, S. Osindero, K. Simonyan and A. Graves, "Practical Real Time
    Recurrent Learning with a Sparse Approximation", ICLR 2021 (arXiv:2006.07232).

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> from kfrtrl.estimators import SnAp1
    >>> est = SnAp1(kfrtrl.Elman(n_in=2, n_hidden=4, rng=0), batch_size=3)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "snap1"
    auto_backends = ("numba", "cython")     # one pass over the influence, numba and cython alike
    _state_attrs = ("_G",)
    _recurrent = True           # RFLO drops the recurrent weights from T (see kfrtrl.estimators.rflo)

    def _allocate(self):
        n, N = self.cell.n_hidden, self.cell.n_state
        self._elementwise = getattr(self.cell, "elementwise", False)
        if self._elementwise:                   # the influence on r only, of the recurrent layer's weights
            self._S, names = 1, self.cell.recurrent_names()
        elif N % n:
            raise ValueError(f"cell: {self.name} expects the state to be blocks of n_hidden = {n} units, "
                             f"got n_state = {N}")
        else:
            self._S, names = N // n, list(self._shapes)
        self._G = {k: np.zeros((self.batch_size,) + self._shapes[k] + (self._S,), dtype=self.dtype) for k in names}

    def tangents(self):
        """One: the influence is propagated unit by unit, no tangent goes through the step's GEMM."""
        return 1

    def _reset_influence(self, mask):
        for G in self._G.values():
            G[mask] = 0.0

    def _propagate(self, cache):
        if self._elementwise:
            T, imm = _elementwise_blocks(self.cell, cache)
        else:
            T, imm = unit_blocks(self.cell, cache, self._recurrent)
        for name, G in self._G.items():
            D, a = imm[name]
            self.ops.snap1_step(G, T, D, a, self.n_threads)
        # no finiteness pass over G here (it would double the step's memory traffic): a
        # non-finite influence shows in the next gradient, which the base class checks

    def _gradient(self, c):
        B, n = self.batch_size, self.cell.n_hidden
        grads = {}
        if self._elementwise:                   # exact through the readout, down to ∂L/∂r_t
            c_r, proj = self.cell.readout_backward(self._cache, c)
            grads = {name: g.T @ a for name, (g, a) in proj.items()}
            cu = np.ascontiguousarray(c_r).reshape(B, n, 1)
        else:
            cu = np.ascontiguousarray(c.reshape(B, self._S, n).transpose(0, 2, 1))     # (B, n, S)
        for name, G in self._G.items():
            grads[name] = np.empty(G.shape[1:3], dtype=self.dtype)
            self.ops.snap1_gradient(G, cu, grads[name], self.n_threads)
        return grads

    def influence(self, name):
        """The estimate of G for weight ``name`` as (batch, n_state, p, m), zeros off the pattern (tests).

        On an element-wise cell: the influence on r of a recurrent weight, (batch, Z, n, m)
        (the layout of ``RTRL.influence`` there).

        Parameters
        ----------
        name : str, a parameter name of the cell

        Returns
        -------
        array of the cell's dtype
        """
        G = self._G[name]
        if self._elementwise:
            return G.reshape(G.shape[0], -1, self.cell.n_hidden, G.shape[2]).copy()
        B, p, m, S = G.shape
        n = self.cell.n_hidden
        out = np.zeros((B, S, n, p // n, n, m), dtype=self.dtype)
        u = np.arange(n)
        out[:, :, u, :, u, :] = G.reshape(B, p // n, n, m, S).transpose(2, 0, 4, 1, 3)
        return out.reshape(B, S * n, p, m)


def unit_blocks(cell, cache, recurrent=True):
    """Per-unit blocks of one step's Jacobian and immediate terms, from the cell's layers.

    Parameters
    ----------
    cell : Cell whose state is S blocks of n = n_hidden units
    cache : the step's layers (``cell.forward``)
    recurrent : False drops the recurrent weights (``T = Λ_K ⋯ Λ_1`` per unit: RFLO)

    Returns
    -------
    T : (B, n, S, S), the unit-u block of the step Jacobian as the product of the layers'
    {name: (D (B, p, S), a (B, m))}, each weight row's one-step influence on its unit's
        state entries and the weight's input vector.
    Cost O(B n S² (Z + K)) for K layers: no matrix product.
    """
    n = cell.n_hidden
    T, pending, inputs = None, {}, {}
    for layer in cache:
        B, S_out, Z, n_l = layer.dz.shape
        if n_l != n:
            raise ValueError(f"cell: the sparse estimators expect layers of n_hidden = {n} units, got {n_l}")
        Tl = np.ascontiguousarray(np.moveaxis(layer.lam, 3, 1))         # (B, n, S_out, S_in)
        if recurrent:
            R = _recurrent_diagonal(cell.params()[layer.name], layer.rec, Z, n, Tl.shape[3])
            if R is not None:
                Tl += np.einsum("bszu,zuj->busj", layer.dz, R)
        for name, D in pending.items():
            pending[name] = np.matmul(Tl[:, None], D[..., None])[..., 0]
        T = Tl if T is None else np.matmul(Tl, T)
        pending[layer.name] = np.moveaxis(layer.dz, 1, 3)              # (B, Z, n, S_out)
        inputs[layer.name] = layer.a
    S = T.shape[2]
    if T.shape[3] != S:
        raise ValueError(f"cell: the step maps {T.shape[3]} state blocks to {S}; expected the same number")
    imm = {name: (np.ascontiguousarray(D).reshape(D.shape[0], -1, S), inputs[name]) for name, D in pending.items()}
    return T, imm


def _elementwise_blocks(cell, cache):
    """:func:`unit_blocks` for an element-wise cell, on its recurrent state r (S = 1).

    T (B, n, 1, 1) is r's diagonal Jacobian λ; D (B, Z n, 1) each recurrent weight row's
    immediate influence on its unit (element-wise parameter vectors included).
    """
    lam, terms = cell.recurrent_terms(cache)
    B, n = lam.shape
    T = lam.reshape(B, n, 1, 1)
    return T, {name: (np.ascontiguousarray(dz).reshape(B, -1, 1), a) for name, (dz, a) in terms.items()}


def _recurrent_diagonal(W, rec, Z, n, S_in):
    """(Z, n, S_in): entry [z, u, J] = W[z n + u, column reading unit u of input block J], or None.

    ``rec`` is the slice of the layer's input state that W's first columns read; it must
    cover whole blocks of n units for unit u's entries to be well defined.
    """
    n_rec = rec.stop - rec.start
    if n_rec == 0:
        return None
    if rec.start % n or n_rec % n:
        raise ValueError(f"cell: a layer reads the state slice {rec}, expected whole blocks of {n} units")
    k = n_rec // n
    R = np.zeros((Z, n, S_in), dtype=W.dtype)
    R[:, :, rec.start // n:rec.start // n + k] = np.einsum("zuku->zuk", W[:, :n_rec].reshape(Z, n, k, n))
    return R
