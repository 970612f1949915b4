"""Back-propagation through time: the sequence-level ground truth and truncated BPTT.

``bptt`` back-propagates a whole sequence exactly. ``TBPTT(truncation=T)``
is the online baseline: at each step it back-propagates ∂L_t/∂s_t through
the last T steps only, so it is blind to dependencies longer than T.
Cost O(T·N·m) per step per sample, memory O(T·(N + m)).
"""
from collections import deque

import numpy as np

from .._validation import check_array, check_int
from ..cells import Cell
from ._base import Estimator
from ._registry import register


def _backward(cell, cache, c, grads):
    """Add step t's weight gradient for state cotangent c (B, N) into ``grads``; return H_tᵀ c."""
    c, proj = cell.backward(cache, c)
    for name, (g, a) in proj.items():
        grads[name] += g.T @ a
    return c


def bptt(cell, xs, dl_dhs, h0=None):
    """Exact gradient of Σ_t Σ_b L_t for a whole sequence: the ground truth of every estimator.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
    xs : ndarray (T, batch, n_in) of the cell's dtype
        The inputs.
    dl_dhs : ndarray (T, batch, n_hidden) of the cell's dtype
        ∂L_t/∂h_t, the direct loss signal of each step.
    h0 : ndarray (batch, n_state) or None
        Initial state (zeros if None).

    Returns
    -------
    dict of str to ndarray
        {name: gradient (p, m)} for every weight matrix of ``cell.params()``, summed over the
        batch and the steps.

    Notes
    -----
    Cost per sample: O(T N m) time (one forward and one backward sweep) and O(T (N + m))
    memory for the caches. Exact RTRL summed online equals it (tested for every cell).

    References
    ----------
    P. J. Werbos, "Backpropagation through time: what it does and how to do it", Proceedings
    of the IEEE 78(10):1550-1560, 1990.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> xs, dl = np.ones((5, 3, 2)), np.ones((5, 3, 4))
    >>> kfrtrl.bptt(cell, xs, dl)["W"].shape
    (4, 7)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kfrtrl cell, got {type(cell).__name__}")
    if not isinstance(xs, np.ndarray) or xs.ndim != 3:
        raise ValueError(f"xs: expected an array (T, batch, {cell.n_in}), got {getattr(xs, 'shape', type(xs))}")
    T, B, _ = xs.shape
    check_array("xs", xs, (T, B, cell.n_in), cell.dtype)
    check_array("dl_dhs", dl_dhs, (T, B, cell.n_hidden), cell.dtype)
    s = cell.initial_state(B) if h0 is None else check_array("h0", h0, (B, cell.n_state), cell.dtype)
    caches = []
    for t in range(T):
        s, cache = cell.forward(s, xs[t])
        caches.append(cache)
    grads = {k: np.zeros(shape, dtype=cell.dtype) for k, shape in cell.param_shapes().items()}
    c = np.zeros((B, cell.n_state), dtype=cell.dtype)
    for t in reversed(range(T)):
        c[:, cell.out] += dl_dhs[t]
        c = _backward(cell, caches[t], c, grads)
    return grads


@register
class TBPTT(Estimator):
    """Truncated back-propagation through time: the online baseline.

    Each ``gradient(dl_dh)`` back-propagates ∂L_t/∂h_t through the last ``truncation`` steps
    (their caches are kept) and returns that gradient: exact for dependencies up to T steps
    back, blind to longer ones.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt (any cell: :class:`kfrtrl.Elman`,
        :class:`kfrtrl.LSTM`, ... or your own, see the README).
    [shared parameters]
    truncation : int >= 1
        T, the number of steps back-propagated through (spec ``"tbptt:T"``; default 25).

    Notes
    -----
    Cost per step and sample: O(T N m) time (T backward steps) and O(T (N + m)) memory;
    O(T n²) for the Elman cell.

    [step and gradient]

    References
    ----------
    R. J. Williams and J. Peng, "An efficient gradient-based algorithm for on-line training of
    recurrent network trajectories", Neural Computation 2(4):490-501, 1990.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=2, n_hidden=4, rng=0)
    >>> est = kfrtrl.TBPTT(cell, truncation=10, batch_size=3)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "tbptt"
    param = "truncation"
    stacks = True                           # back-propagates through any cell
    _state_attrs = ("_window", "_cut")      # auto_backends empty: it calls no kernel

    def __init__(self, cell, truncation=25, batch_size=1, rng=None, backend="auto", n_threads=None):
        self.truncation = check_int("truncation", truncation, 1)
        super().__init__(cell, batch_size, rng, backend, n_threads)

    def _allocate(self):
        # (cache, cut) pairs; cut (B,) marks samples reset just before that step
        self._window = deque(maxlen=self.truncation)
        self._cut = np.zeros(self.batch_size, dtype=bool)

    def tangents(self):
        """One cotangent per step of the window."""
        return self.truncation

    def _reset_influence(self, mask):
        self._cut |= mask

    def _propagate(self, cache):
        self._window.append((cache, self._cut))
        self._cut = np.zeros(self.batch_size, dtype=bool)

    def _gradient(self, c):
        grads = {k: np.zeros(shape, dtype=self.dtype) for k, shape in self._shapes.items()}
        for cache, cut in reversed(self._window):
            c = _backward(self.cell, cache, c, grads)
            c[cut] = 0.0
        return grads
