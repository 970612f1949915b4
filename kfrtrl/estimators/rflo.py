"""RFLO: random-feedback local online learning (Murray 2019), for the leaky Elman cell.

For ``h_t = (1 − α) h_{t−1} + α f(u_t)``, ``u_t = W [h_{t−1}; x_t; 1]``, the
eligibility trace of W drops every path through the recurrent weights::

    P_ij ← (1 − α) P_ij + α f'(u_i) [h_{t−1}; x_t; 1]_j

The same trace serves any cell whose step is of that Elman type, one weight
matrix W and ``∂h_t/∂h_{t−1} = diag(λ_t) + diag(∂h_t/∂u_t) W_h`` (``Cell.diagonal_step``):
``P ← λ_t P + (∂h_t/∂u_t) ⊗ a_t``. Other cells are refused (TypeError).

and the gradient of a step is ``Σ_i c_i P_ij``. Cost O(n m) per sample and
step (O(n²)), memory O(n m).

The loss signal ``c``. Through :meth:`gradient` it is the ``dl_dh = ∂L_t/∂h_t`` the
caller passes; with a linear readout that is ``W_outᵀ ε`` for the output error
ε, the readout's own transposed weights. Murray's RFLO instead projects the
error through a fixed random matrix B; pass ``ε @ B`` as ``dl_dh`` for that
(:func:`random_feedback` draws such a B), which needs no change here.
"""
import numpy as np

from .._validation import as_generator, check_int
from ._registry import register
from .snap1 import SnAp1


@register
class RFLO(SnAp1):
    """RFLO: random-feedback local online learning, SnAp-1 with the step Jacobian reduced to the leak.

    For the leaky Elman cell (and any cell with its one-layer, unit-diagonal step): the
    influence of W_ij on unit i decays by 1 − α per step and gains the immediate term; the
    recurrent weights' effect on the propagation is dropped.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell whose weights are learnt: :class:`kfrtrl.Elman`, or a cell of your
        own with its one-layer, unit-diagonal step (``Cell.diagonal_step``); others raise TypeError.
    [shared parameters]

    Notes
    -----
    Cost per step and sample: O(n (n + n_in)) time and memory, the forward pass's. ``rng`` is
    unused. In the paper the loss signal reaches h through a fixed random feedback matrix
    (:func:`kfrtrl.estimators.rflo.random_feedback`); here ``gradient`` takes whatever ∂L/∂h
    it is given.

    [step and gradient]

    References
    ----------
    J. M. Murray, "Local online learning in recurrent networks with random feedback", eLife
    8:e43299, 2019.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> from kfrtrl.estimators import RFLO
    >>> est = RFLO(kfrtrl.Elman(n_in=2, n_hidden=4, alpha=0.5, rng=0), batch_size=3)
    >>> h = est.step(np.ones((3, 2)))
    >>> est.gradient(np.ones((3, 4)))["W"].shape
    (4, 7)
    """

    name = "rflo"
    _recurrent = False

    def __init__(self, cell, batch_size=1, rng=None, backend="auto", n_threads=None):
        super().__init__(cell, batch_size, rng, backend, n_threads)
        _, cache = cell.forward(cell.initial_state(1), np.zeros((1, cell.n_in), dtype=cell.dtype))
        diagonal = cell.diagonal_step(cache)
        if diagonal is None or diagonal[2].shape[1] != 1:          # one diagonal block: the Elman step
            raise TypeError(f"cell: rflo supports the leaky Elman cell (kfrtrl.Elman) and cells with its "
                            f"one-layer, unit-diagonal step, got {type(cell).__name__}")


def random_feedback(n_out, n_hidden, dtype=np.float64, rng=None):
    """A fixed random feedback matrix B (n_out, n_hidden), entries N(0, 1/n_hidden).

    Use ``est.gradient(err @ B)`` with the output error ``err`` (batch, n_out) in place of
    the readout's ``err @ W_out[:, :n_hidden]``: Murray's random-feedback RFLO.

    Parameters
    ----------
    n_out, n_hidden : int >= 1
    dtype : numpy float dtype, of B
    rng : None, int or numpy.random.Generator

    Returns
    -------
    (n_out, n_hidden) array of ``dtype``
    """
    n_out = check_int("n_out", n_out, 1)
    n_hidden = check_int("n_hidden", n_hidden, 1)
    return (as_generator(rng).standard_normal((n_out, n_hidden)) / np.sqrt(n_hidden)).astype(dtype)
