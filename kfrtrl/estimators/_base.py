"""What every estimator shares: validation, state, reset, the step/gradient loop."""
import contextlib
import os

import numpy as np

from .._validation import as_generator, check_array, check_int, check_mask
from ..backends import get_backend
from ..cells import Cell
from ..threads import limit


class Estimator:
    """Base class of the online gradient estimators.

    Subclasses implement ``_reset_influence(mask)``, ``_gradient(c)`` and either
    ``_propagate(cache)`` or, when they have a fused kernel for a cell whose step
    is diagonal (``Cell.diagonal_step``), ``_propagate_fused(name, lam, dz, a)``
    and ``_propagate_layers(cache)``; this class validates, keeps the state and
    calls them.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
    batch_size : int >= 1, samples carried in parallel (each its own influence)
    rng : None, int or numpy.random.Generator; all random draws come from it
    backend : "auto", "numpy", ... (see :func:`kfrtrl.backends.known_backends`)
    n_threads : int >= 1 or None (all cores): threads the kernels and BLAS may
        use during ``step``; applied with :func:`kfrtrl.threads.limit` and
        restored afterwards.
    """

    name = None

    def __init__(self, cell, batch_size=1, rng=None, backend="auto", n_threads=None):
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected a kfrtrl cell (e.g. kfrtrl.Elman), got {type(cell).__name__}")
        allowed = getattr(cell, "estimators", None)         # a Stack: RTRL and TBPTT only
        if allowed is not None and self.name not in allowed:
            raise TypeError(f"cell: a {type(cell).__name__} supports the estimators {list(allowed)}, not {self.name!r}")
        self.cell = cell
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.rng = as_generator(rng)
        self.backend, self.ops = get_backend(backend, self.name)
        self._limit = n_threads is not None
        self.n_threads = (os.cpu_count() or 1) if n_threads is None else check_int("n_threads", n_threads, 1)
        self.dtype = cell.dtype
        self._shapes = cell.param_shapes()
        self._s = cell.initial_state(self.batch_size)
        self._cache = None
        self._allocate()

    def _allocate(self):
        """Allocate the influence state (called once; zero = freshly reset)."""
        raise NotImplementedError

    def _propagate(self, cache):
        """Advance the influence: one fused kernel for a diagonal step, else layer by layer."""
        diagonal = self.cell.diagonal_step(cache)
        if diagonal is not None:
            self._propagate_fused(*diagonal)
        else:
            self._propagate_layers(cache)

    @property
    def state(self):
        """Current cell state (batch, n_state); for the Elman cell that is h."""
        return self._s

    @state.setter
    def state(self, value):
        self._s = check_array("state", value, self._s.shape, self.dtype).copy()

    def reset(self, mask=None):
        """Zero the state and influence of all samples, or of those where ``mask`` (batch,) is True."""
        mask = check_mask("mask", mask, self.batch_size)
        self._s[mask] = 0.0
        self._reset_influence(mask)
        if mask.all():
            self._cache = None

    def step(self, x):
        """Advance one step. x (batch, n_in) of the cell's dtype -> h_t (batch, n_hidden)."""
        check_array("x", x, (self.batch_size, self.cell.n_in), self.dtype)
        with self._threads():
            s_new, cache = self.cell.forward(self._s, x)
            if not np.isfinite(s_new).all():
                raise FloatingPointError("step: the new state is not finite (weights or inputs too large?)")
            self._propagate(cache)
        self._s = s_new
        self._cache = cache
        return s_new[:, self.cell.out]

    def gradient(self, dl_dh):
        """Estimate ∂L_t/∂θ summed over the batch, from dl_dh = ∂L_t/∂h_t (batch, n_hidden).

        Returns {name: array of the parameter's shape}.
        """
        if self._cache is None:
            raise RuntimeError("gradient: call step(x) first (no step since construction or reset)")
        check_array("dl_dh", dl_dh, (self.batch_size, self.cell.n_hidden), self.dtype)
        c = np.zeros((self.batch_size, self.cell.n_state), dtype=self.dtype)
        c[:, self.cell.out] = dl_dh
        with self._threads():
            grads = self._gradient(c)
        for name, g in grads.items():
            if not np.isfinite(g.sum(dtype=np.float64)):        # a non-finite entry makes the sum so
                raise FloatingPointError(f"gradient: the {self.name} estimate of {name!r} is not finite")
        return grads

    def _threads(self):
        """The thread limit of ``n_threads`` (a no-op when it was left at None: all cores)."""
        return limit(self.n_threads) if self._limit else contextlib.nullcontext()

    def _draw_signs(self, shape):
        """Independent ±1 draws of the cell's dtype (per sample, per step, per term).

        The sign of ``U - 1/2`` for U uniform on [0, 1) (+1 at U = 1/2, the +0 case): each
        sign is exactly fair, and one ``random`` call costs a third of ``integers``; drawn in
        float64 whatever the dtype, so float32 and float64 twins see the same signs.
        """
        return np.copysign(1.0, self.rng.random(shape) - 0.5).astype(self.dtype, copy=False)

    def _check_factors(self, *arrays):
        """Raise FloatingPointError if an influence factor stopped being finite."""
        for arr in arrays:
            if not np.isfinite(arr).all():
                raise FloatingPointError(f"{self.name}: influence factors became non-finite")
