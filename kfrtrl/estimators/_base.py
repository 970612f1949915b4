"""What every estimator shares: validation, state, reset, the step/gradient loop."""
import contextlib
import copy
import os
import time

import numpy as np

from .._validation import as_generator, check_array, check_int, check_mask
from ..backends import get_backend
from ..cells import Cell
from ..threads import AutoThreads, limit
from ._registry import ESTIMATORS


class Estimator:
    """Base class of the online gradient estimators.

    Subclasses implement ``_reset_influence(mask)``, ``_gradient(c)``, ``tangents()``
    and either ``_propagate(cache)`` or, when they have a fused kernel for a cell
    whose step is diagonal (``Cell.diagonal_step``), ``_propagate_fused(name, lam,
    dz, a)`` and ``_propagate_layers(cache)``; this class validates, keeps the state
    and calls them. They declare themselves with the class attributes below and
    :func:`kfrtrl.estimators._registry.register`.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
    batch_size : int >= 1, samples carried in parallel (each its own influence)
    rng : None, int or numpy.random.Generator; all random draws come from it
    backend : "auto", "numpy", ... (see :func:`kfrtrl.backends.known_backends`)
    n_threads : int >= 1 or None: threads the kernels use during ``step`` and ``gradient``
        (:meth:`threads`, restored afterwards); None: all cores, or one thread while timing
        shows that faster (another process keeping a core busy). With a compiled backend and
        a batch > 1 the kernels parallelise over samples and BLAS stays at one thread;
        otherwise BLAS gets the threads.

    Class attributes (the declaration the registry reads)
    ----------------------------------------------------
    name : str, the spec name (``kfrtrl.train.make_estimator``, the command)
    param : str or None, the constructor argument a spec's ``:k`` sets
    auto_backends : tuple of backend names ``backend="auto"`` tries in order
        (numpy when none is available; empty: the estimator calls no kernel)
    dense_immediate : bool, whether the immediate terms of earlier Jacobian
        layers are propagated as dense tangents (the benchmarks' GEMM bound)
    forms_jacobian : bool, whether every step goes through the formed step Jacobian
        (``Cell.jacobian_t``; the benchmarks' GEMM bound)
    stacks : bool, whether it runs on a :class:`kfrtrl.Stack` of element-wise cells
    _state_attrs : names of the attributes holding the influence (saved by
        :meth:`state_dict`; every other attribute is configuration or scratch)
    """

    name = None
    param = None
    auto_backends = ()
    dense_immediate = False
    forms_jacobian = False
    stacks = False
    _state_attrs = ()
    # the most diagonal blocks (Z of Cell.diagonal_step) _propagate_fused takes: 0 (no fused
    # kernel), a count, or None (any)
    fused_blocks = 0

    def __init__(self, cell, batch_size=1, rng=None, backend="auto", n_threads=None):
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected a kfrtrl cell (e.g. kfrtrl.Elman), got {type(cell).__name__}")
        if hasattr(cell, "cells") and not self.stacks:     # a Stack of element-wise cells
            supported = sorted(name for name, cls in ESTIMATORS.items() if cls.stacks)
            raise TypeError(f"cell: a {type(cell).__name__} supports the estimators {supported}, not {self.name!r}")
        self.cell = cell
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.rng = as_generator(rng)
        self.backend, self.ops = get_backend(backend, self.auto_backends)
        # the fixed count, or all cores; with n_threads=None AutoThreads picks each step's count
        self._n_threads = (os.cpu_count() or 1) if n_threads is None else check_int("n_threads", n_threads, 1)
        self._auto = AutoThreads(self._n_threads) if n_threads is None and self._n_threads > 1 else None
        self._count = None                       # the thread count of the step under way
        self.dtype = cell.dtype
        self._shapes = cell.param_shapes()
        self._s = cell.initial_state(self.batch_size)
        self._cache = None
        self._cotangent = None                  # step's loss_grad cotangent (batch, n_state) while it propagates
        self._allocate()

    def _allocate(self):
        """Allocate the influence state (called once; zero = freshly reset)."""
        raise NotImplementedError

    def tangents(self):
        """K: state tangents per sample pushed through the whole cell step by one step + gradient."""
        raise NotImplementedError

    def config(self):
        """What a checkpoint must agree on: class, batch, dtype, parameter shapes and the ``param``."""
        config = {"class": type(self).__name__, "batch_size": self.batch_size, "dtype": self.dtype.name,
                  "shapes": dict(self._shapes)}
        if self.param is not None:
            config[self.param] = getattr(self, self.param)
        return config

    def state_dict(self):
        """Everything a bit-identical continuation needs, deep-copied.

        {"config": :meth:`config`, "state": s (batch, n_state), "cache": the last step's
        cache, "rng": the generator's state, "influence": {attribute: value} of
        ``_state_attrs``}. Scratch buffers are left out: each step writes them before reading.
        """
        return copy.deepcopy({
            "config": self.config(), "state": self._s, "cache": self._cache,
            "rng": self.rng.bit_generator.state,
            "influence": {k: getattr(self, k) for k in self._state_attrs},
        })

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output; ValueError naming the first configuration mismatch."""
        config = self.config()
        for key in sorted(set(config) | set(state["config"])):
            if state["config"].get(key) != config.get(key):
                raise ValueError(f"checkpoint: expected estimator {key} {config.get(key)!r} (this run), "
                                 f"got {state['config'].get(key)!r} in the checkpoint")
        if sorted(state["influence"]) != sorted(self._state_attrs):
            raise ValueError(f"checkpoint: expected estimator state {sorted(self._state_attrs)}, "
                             f"got {sorted(state['influence'])}")
        state = copy.deepcopy(state)
        self._s, self._cache = state["state"], state["cache"]
        self.rng.bit_generator.state = state["rng"]
        for k, v in state["influence"].items():
            setattr(self, k, v)

    def _propagate(self, cache):
        """Advance the influence: one fused kernel for a diagonal step, else layer by layer."""
        diagonal = self.cell.diagonal_step(cache)
        if self.fuses(diagonal):
            self._propagate_fused(*diagonal)
        else:
            self._propagate_layers(cache)

    def fuses(self, diagonal):
        """True when :meth:`step` runs the diagonal step ``diagonal`` (of ``Cell.diagonal_step``,
        None when the step is not diagonal) in one fused kernel."""
        if diagonal is None or self.fused_blocks == 0:
            return False
        return self.fused_blocks is None or diagonal[2].shape[1] <= self.fused_blocks

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

    def step(self, x, loss_grad=None):
        """Advance one step. x (batch, n_in) of the cell's dtype -> h_t (batch, n_hidden).

        ``loss_grad``, if given, is called once with h_t before the influence is propagated and
        returns dl_dh = ∂L_t/∂h_t (batch, n_hidden) of the cell's dtype (a readout of h_t can:
        :class:`kfrtrl.train.Trainer` passes its own). An estimator that can (OK's fused step)
        then takes the gradient's products from the propagated terms while they are in cache,
        and :meth:`gradient` with that dl_dh makes no pass over the influence; any other
        gives the same result as without it.
        """
        check_array("x", x, (self.batch_size, self.cell.n_in), self.dtype)
        self._cotangent = None
        with self.threads():
            s_new, cache = self.cell.forward(self._s, x)
            if not np.isfinite(s_new).all():
                raise FloatingPointError("step: the new state is not finite (weights or inputs too large?)")
            if loss_grad is not None:
                dl_dh = check_array("loss_grad(h)", loss_grad(s_new[:, self.cell.out]),
                                    (self.batch_size, self.cell.n_hidden), self.dtype)
                self._cotangent = self._state_cotangent(dl_dh)
            self._propagate(cache)
        self._s = s_new
        self._cache = cache
        return s_new[:, self.cell.out]

    def _state_cotangent(self, dl_dh):
        """c (batch, n_state): dl_dh on the output units, 0 elsewhere."""
        c = np.zeros((self.batch_size, self.cell.n_state), dtype=self.dtype)
        c[:, self.cell.out] = dl_dh
        return c

    def gradient(self, dl_dh):
        """Estimate ∂L_t/∂θ summed over the batch, from dl_dh = ∂L_t/∂h_t (batch, n_hidden).

        Returns {name: array of the parameter's shape}.
        """
        if self._cache is None:
            raise RuntimeError("gradient: call step(x) first (no step since construction or reset)")
        check_array("dl_dh", dl_dh, (self.batch_size, self.cell.n_hidden), self.dtype)
        c = self._state_cotangent(dl_dh)
        with self.threads():
            grads = self._gradient(c)
        for name, g in grads.items():
            if not np.isfinite(g.sum(dtype=np.float64)):        # a non-finite entry makes the sum so
                raise FloatingPointError(f"gradient: the {self.name} estimate of {name!r} is not finite")
        return grads

    @property
    def n_threads(self):
        """The thread count of the step under way (else the fixed ``n_threads``, or all cores)."""
        return self._n_threads if self._count is None else self._count

    @property
    def auto_threads(self):
        """The :class:`kfrtrl.threads.AutoThreads` choosing each step's count with ``n_threads=None``
        on several cores, else None (a fixed count)."""
        return self._auto

    @contextlib.contextmanager
    def threads(self):
        """The thread context of a step: :func:`kfrtrl.threads.limit` at the step's thread count.

        The count is ``n_threads``, or with ``n_threads=None`` all cores or one thread, whichever
        the step's own timing shows faster (:class:`kfrtrl.threads.AutoThreads`). With a compiled
        backend the kernels own the threads (samples, or row blocks of one sample, in parallel)
        and BLAS is held at one thread, so that no OpenBLAS worker spins on a core the kernels
        need (:mod:`kfrtrl.threads`); with numpy, BLAS takes the threads. :class:`kfrtrl.train.Trainer`
        runs its whole step (readout, optimizer) in it; a context entered inside another changes
        nothing. A one-thread step leaves numba's count alone (its kernels take their serial
        variant at ``n_threads=1`` whatever the count), which saves ~4 µs a step.
        """
        if self._count is not None:                     # nested: the outer context holds
            yield
            return
        n = self._auto.take() if self._auto is not None else self._n_threads
        kernels_parallel = self.backend != "numpy" and n > 1
        self._count = n
        start = time.perf_counter()
        try:
            with limit(n, numba=n > 1, blas=1 if kernels_parallel else None):
                yield
        finally:
            self._count = None
        if self._auto is not None:
            self._auto.record(time.perf_counter() - start)

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
