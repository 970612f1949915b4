"""The leaky Elman cell: one Jacobian layer with a diagonal structure (the fused kernels' case)."""
import numpy as np

from .._validation import as_generator, check_choice, check_dtype, check_float, check_int
from ._base import _ACTIVATIONS, Cell, Layer, _init_weight, _weight_property


class Elman(Cell):
    """Leaky Elman cell ``h_t = (1 - α) h_{t-1} + α f(W [h_{t-1}; x_t; 1])``.

    Parameters
    ----------
    n_in, n_hidden : int
    alpha : float in (0, 1], the leak (1 = plain RNN)
    activation : "tanh" or "sigmoid"
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Initialisation: ``W_h ~ N(0, 1/n_hidden)`` (spectral radius ≈ 1),
    ``W_x ~ N(0, 1/n_in)``, ``b = 0``.

    Attributes
    ----------
    W : (n_hidden, n_hidden + n_in + 1) = [W_h | W_x | b], writable in place.

    Notes
    -----
    Cost per step and sample: O(n (n + n_in)) time (one matrix-vector product) and O(n) memory;
    the step Jacobian is diagonal plus diag(dz) W_h, so KF-RTRL, OK and UORO run it in one
    fused kernel. ``forward(s, x)`` takes s (batch, n_hidden) and x (batch, n_in) of ``dtype``.

    References
    ----------
    J. L. Elman, "Finding structure in time", Cognitive Science 14(2):179-211, 1990.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.Elman(n_in=3, n_hidden=5, alpha=0.5, rng=0)
    >>> cell.W.shape                                  # [W_h | W_x | b]
    (5, 9)
    >>> s, cache = cell.forward(cell.initial_state(2), np.ones((2, 3)))
    >>> s.shape
    (2, 5)
    """

    def __init__(self, n_in, n_hidden, alpha=1.0, activation="tanh", dtype=np.float64, rng=None):
        self.n_in = check_int("n_in", n_in, 1)
        self.n_hidden = self.n_state = check_int("n_hidden", n_hidden, 1)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0, open_low=True)
        self.activation = check_choice("activation", activation, _ACTIVATIONS)
        self.dtype = check_dtype("dtype", dtype)
        self.out = slice(0, self.n_hidden)
        self._params = {"W": _init_weight(as_generator(rng), n_hidden, n_hidden, n_in, self.dtype)}

    W = _weight_property("W")

    def _layers(self, s, x):
        B, n = s.shape
        f, fprime = _ACTIVATIONS[self.activation]
        a = np.empty((B, n + self.n_in + 1), dtype=self.dtype)     # [s; x; 1] (faster than concatenate
        a[:, :n], a[:, n:-1], a[:, -1] = s, x, 1.0                 # at small sizes)
        y = f(a @ self.W.T)
        if self.alpha == 1.0:                   # plain RNN: skip the leak's exact no-ops
            s_new, dz = y, fprime(y)
        else:
            s_new = (1.0 - self.alpha) * s + self.alpha * y
            dz = self.alpha * fprime(y)
        lam = np.empty((B, 1, 1, n), dtype=self.dtype)
        lam.fill(1.0 - self.alpha)
        dz = dz.reshape(B, 1, 1, n)
        return s_new, [Layer("W", a, lam, dz, slice(0, n))]
