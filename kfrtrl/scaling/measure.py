"""Measuring: workloads and the GEMM lower bound, timed by :mod:`.timing`, reported by :mod:`.report`.

- :class:`Workload` builds a cell (:func:`make_cell`, named as :func:`parse_cell`)
  and an estimator (a spec of :func:`kfrtrl.train.parse_spec`, labelled by
  :func:`canonical`) and runs one online step (``step`` then ``gradient``),
  the unit that is timed;
- :func:`measure` / :func:`run` time workloads directly (median of repeats,
  warm-up excluded so compilation is outside the timing), skipping sizes a
  :class:`~kfrtrl.scaling.timing.Budget` predicts to be too slow or too large.

The GEMM lower bound of a step is the product every estimator cannot avoid:
its K propagated tangents per sample through each Jacobian layer l of the
cell, a (batch·K, n_rec) @ (n_rec, p_l) GEMM with ``W_l[:, :n_rec]ᵀ`` (plus,
for the estimators that carry them densely, the immediate terms of the
earlier layers, see :func:`gemm_layers`), in the cell's dtype, timed in the
same run. The layers come from a dry forward pass, so the bound follows any cell.
"""
import contextlib
import dataclasses
import re
import statistics
import tracemalloc
from collections import deque

import numpy as np

from .. import estimators
from .._validation import check_dtype, check_int
from ..cells import ELSTM, GRU, LRU, LSTM, RHN, Elman
from ..threads import limit
from .report import SUITE
from .timing import Budget, time_per_call

#: the sizes of the scaling grid; the exponent is fitted on the upper half
SIZES = (16, 32, 64, 128, 256, 512)
#: the estimators compared by default (the registry's selection)
DEFAULT_ESTIMATORS = estimators.BENCH_DEFAULT
#: the benchmark cells by name; ``rhnL`` (or ``rhn:L``, ``rhn-L``) is an RHN of depth L
CELLS = {"elman": Elman, "rhn": RHN, "lstm": LSTM, "gru": GRU, "elstm": ELSTM, "lru": LRU}
#: the cells measured by default
DEFAULT_CELLS = ("elman",)
#: inputs of the benchmark cell (m = n + N_IN + 1 for a layer reading [h; x; 1])
N_IN = 8


canonical = estimators.canonical


def parse_cell(spec):
    """``"rhn3"`` (or ``"rhn:3"``, ``"rhn-3"``) -> ("rhn", 3); ``"lstm"`` -> ("lstm", None).

    Parameters
    ----------
    spec : str
        A name of :data:`CELLS`; only ``rhn`` takes a depth, an integer >= 1.

    Returns
    -------
    name : str
    depth : int or None

    Raises
    ------
    ValueError
        Naming the accepted cells (TypeError if ``spec`` is not a string).
    """
    if not isinstance(spec, str):
        raise TypeError(f"cell: expected a string such as 'lstm' or 'rhn3', got {type(spec).__name__}")
    match = re.fullmatch(r"([a-z]+)(?:[:-]?(\d+))?", spec)
    name, depth = match.groups() if match else (spec, None)
    if name not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)} (rhnL: depth L), got {spec!r}")
    if not depth:
        return name, None
    if name != "rhn" or int(depth) < 1:
        raise ValueError(f"cell: only rhn takes a depth, rhnL with an integer L >= 1, got {spec!r}")
    return name, int(depth)


def canonical_cell(spec):
    """The label of a cell spec: ``"rhn:3"`` -> ``"rhn3"``, ``"rhn1"`` -> ``"rhn"``.

    Parameters
    ----------
    spec : str, a cell spec of :func:`parse_cell`

    Returns
    -------
    str
    """
    name, depth = parse_cell(spec)
    return name if depth in (None, 1) else f"{name}{depth}"


def make_cell(spec, n, dtype="float64", rng=None, n_in=N_IN, **options):
    """Build a cell by name.

    Parameters
    ----------
    spec : str, a cell spec of :func:`parse_cell`
    n : int >= 1, hidden units
    dtype : "float32" or "float64" (or a numpy dtype)
    rng : None, int or numpy.random.Generator, for the weights
    n_in : int >= 1, inputs (default :data:`N_IN`)
    **options
        Further arguments of the cell's constructor (e.g. ``candidate="sigmoid"`` for an RHN).

    Returns
    -------
    kfrtrl.cells.Cell
    """
    name, depth = parse_cell(spec)
    kwargs = {"depth": depth} if depth else {}
    return CELLS[name](n_in, n, dtype=dtype, rng=rng, **kwargs, **options)


def tangents(est):
    """K: state tangents per sample pushed through the whole cell step in one step (step + gradient) of ``est``.

    Each estimator declares it (``est.tangents()``; e.g. exact RTRL: all Σ p_l·m_l
    columns of its influence, a rank-one estimator: 1).

    Parameters
    ----------
    est : kfrtrl estimator

    Returns
    -------
    int
    """
    return est.tangents()


def gemm_layers(est):
    """The GEMMs of the step's lower bound, one per Jacobian layer: [(name, rows, n_rec, p), ...].

    Layer l of the cell multiplies the recurrent part of every tangent by
    ``W_l[:, :n_rec]ᵀ``: a (rows, n_rec) @ (n_rec, p_l) GEMM with
    rows = batch · (K + Σ_{j<l} p_j), K = :func:`tangents`. The Σ_{j<l} p_j
    rows are the immediate terms M_j D_j of the earlier layers, which the
    estimators declaring ``dense_immediate`` carry as dense tangents; the others
    need only their projections (one vjp), so they count 0 there. Layers, names and
    ``n_rec`` from a dry forward pass of the cell (batch 1, zero state and input). A step the
    estimator runs fused (``est.fuses``: the Elman cell, the RHN of depth 1 for KF and OK) is one
    GEMM of all tangents with the step Jacobian, named "H": (rows, N) @ (N, N). So is a step
    whose tangents go through the formed Jacobian (``Cell.dense_route``: the GRU, the RHN of
    depth L; exact RTRL always, ``est.forms_jacobian``), plus the layers' GEMMs that form it
    (rows = batch · (N + Σ_{j<l} p_j)).

    Parameters
    ----------
    est : kfrtrl estimator

    Returns
    -------
    list of (str, int, int, int)
        ``(name, rows, n_rec, p)`` per GEMM.
    """
    cell = est.cell
    _, layers = cell.forward(cell.initial_state(1), np.zeros((1, cell.n_in), dtype=cell.dtype))
    diagonal = cell.diagonal_step(layers)
    B, K, N = est.batch_size, tangents(est), cell.n_state
    if est.fuses(diagonal):                   # one fused kernel: the tangents through H_b (N, N)
        return [("H", B * K, N, N)]
    shapes = cell.param_shapes()
    dense = est.dense_immediate
    per_sample, out = K, []
    if est.forms_jacobian or cell.dense_route(layers, K):   # through H_b, which e_1 … e_N form
        per_sample, out = N, [("H", B * K, N, N)]
    for layer in layers:
        p = shapes[layer.name][0]
        out.append((layer.name, est.batch_size * per_sample, layer.rec.stop - layer.rec.start, p))
        per_sample += p if dense else 0
    return out


def gemm_flops(est):
    """Floating-point operations of the step's GEMM lower bound: Σ_l 2 · rows · n_rec · p (:func:`gemm_layers`).

    Parameters
    ----------
    est : kfrtrl estimator

    Returns
    -------
    int
    """
    return sum(2 * rows * n_rec * p for _, rows, n_rec, p in gemm_layers(est))


def grid(full=False):
    """The measured grid: {"sizes", "batches", "dtypes", "estimators", "cells"}.

    Parameters
    ----------
    full : bool
        False: float64, batch 1, all sizes (what the fitted exponents are read from);
        True: also batch 16 and float32.

    Returns
    -------
    dict of tuples
    """
    return {
        "sizes": SIZES,
        "batches": (1, 16) if full else (1,),
        "dtypes": ("float32", "float64") if full else ("float64",),
        "estimators": DEFAULT_ESTIMATORS,
        "cells": DEFAULT_CELLS,
    }


class Workload:
    """A cell (n_in = :data:`N_IN`, :func:`make_cell`) and an estimator, ready to be stepped.

    Parameters
    ----------
    spec : str, an estimator spec of :func:`kfrtrl.train.parse_spec` ("name" or "name:k")
    n : int >= 1, hidden units
    batch_size : int >= 1
    dtype : "float32" or "float64" (or a numpy dtype)
    backend : str, passed to the estimator ("auto", "numpy", ...)
    n_threads : int >= 1 or None (all cores), for the estimator and the GEMM
    seed : int, seeds the cell, the estimator and the inputs
    cell : str, a cell spec of :func:`parse_cell` ("elman", "rhn", "rhn3", "lstm", "gru", "elstm", "lru")
    """

    def __init__(self, spec, n, batch_size=1, dtype="float64", backend="auto", n_threads=None, seed=0,
                 cell="elman"):
        self.label = canonical(spec)
        self.cell_label = canonical_cell(cell)
        self.n = check_int("n", n, 1)
        self.dtype = check_dtype("dtype", dtype)
        self.n_threads = n_threads
        self.cell = make_cell(cell, self.n, self.dtype, seed)
        batch_size = check_int("batch_size", batch_size, 1)
        self.est = estimators.make_estimator(self.label, self.cell, batch_size, seed + 1, backend, n_threads)
        gen = np.random.default_rng(seed + 2)
        self._xs = gen.standard_normal((8, batch_size, N_IN)).astype(self.dtype)
        self._dl = gen.standard_normal((batch_size, self.n)).astype(self.dtype)
        self._t = 0

    def warm_up(self, steps=2):
        """Run the estimator's transient (TBPTT: filling its window) plus ``steps`` steps (compilation, caches).

        Parameters
        ----------
        steps : int >= 0
        """
        for _ in range(getattr(self.est, "truncation", 0) + steps):
            self.step()

    def step(self):
        """One online step: ``step(x)`` then ``gradient(dl_dh)`` (inputs cycle through 8 draws)."""
        self.est.step(self._xs[self._t % len(self._xs)])
        self.est.gradient(self._dl)
        self._t += 1

    def state_bytes(self):
        """Bytes of the estimator's state (influence, cell state, kept caches) per sample."""
        return _nbytes(vars(self.est), set(), skip=(self.est.cell, self.est.rng, self.est.ops)) / self.est.batch_size

    def peak_bytes(self):
        """Peak bytes per sample during one step: the state plus the step's temporaries (tracemalloc)."""
        held = self.state_bytes()
        tracemalloc.start()
        try:
            self.step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return held + peak / self.est.batch_size

    def gemm_time(self, repeats=5):
        """Median seconds of the step's GEMM lower bound (:func:`gemm_layers`) in this dtype and thread count.

        Parameters
        ----------
        repeats : int >= 1, timed repeats

        Returns
        -------
        float
        """
        gen = np.random.default_rng(0)
        params = self.cell.params()
        operands = [
            (gen.standard_normal((rows, n_rec)).astype(self.dtype),
             gen.standard_normal((n_rec, p)).astype(self.dtype) if name == "H"
             else np.ascontiguousarray(params[name][:, :n_rec].T), np.empty((rows, p), dtype=self.dtype))
            for name, rows, n_rec, p in gemm_layers(self.est)
        ]

        def gemms():
            for a, b, out in operands:
                np.matmul(a, b, out=out)

        with _threads(self.n_threads):
            return statistics.median(time_per_call(gemms, repeats, warmup=1))

    def info(self, gemm_repeats=5):
        """What a benchmark records besides its timing (the extra_info of the JSON).

        Parameters
        ----------
        gemm_repeats : int >= 1, timed repeats of the GEMM lower bound

        Returns
        -------
        dict
            Labels, sizes, backend, threads, bytes per sample and the GEMM bound.
        """
        return {
            "suite": SUITE,
            "estimator": self.label,
            "cell": self.cell_label,
            "n": self.n,
            "batch": self.est.batch_size,
            "dtype": self.dtype.name,
            "backend": self.est.backend,
            "n_threads": self.n_threads,
            "state_bytes_per_sample": self.state_bytes(),
            "peak_bytes_per_sample": self.peak_bytes(),
            "gemm_layers": [list(g) for g in gemm_layers(self.est)],
            "gemm_flops": gemm_flops(self.est),
            "gemm_median": self.gemm_time(gemm_repeats),
        }


def _nbytes(obj, seen, skip):
    """Bytes of the distinct numpy arrays reachable through dicts, sequences and dataclasses."""
    if id(obj) in seen or any(obj is s for s in skip):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple, deque)):
        items = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        return 0
    return sum(_nbytes(item, seen, skip) for item in items)


def _threads(n_threads):
    """The thread limit of a workload, or no change when n_threads is None."""
    return limit(n_threads) if n_threads is not None else contextlib.nullcontext()


def measure(spec, n, batch_size=1, dtype="float64", backend="auto", n_threads=None, repeats=5, seed=0,
            cell="elman"):
    """Time one grid point directly.

    The whole step runs under the thread limit, the cell's forward pass and
    the gradient too (the estimator limits only its propagation).

    Parameters
    ----------
    spec, n, batch_size, dtype, backend, n_threads, seed, cell : see :class:`Workload`
    repeats : int >= 1, timed repeats (the median is ``time``)

    Returns
    -------
    dict
        A record (see :func:`kfrtrl.scaling.load_records`).
    """
    work = Workload(spec, n, batch_size, dtype, backend, n_threads, seed, cell)
    with _threads(n_threads):
        work.warm_up()
        times = time_per_call(work.step, repeats=repeats, warmup=0)
        return _record(work.info(repeats), times)


def _record(info, times):
    return dict(info, time=statistics.median(times), min=min(times), max=max(times), rounds=len(times))


def run(specs, sizes, batches, dtypes, backend="auto", n_threads=None, repeats=5, budget=None, progress=None,
        cells=DEFAULT_CELLS):
    """Measure the grid, small sizes first so the budget can stop each estimator in time.

    Parameters
    ----------
    specs : sequence of str, estimator specs
    sizes, batches : sequences of int
    dtypes : sequence of "float32" / "float64"
    backend : str, kernel backend
    n_threads : int >= 1 or None (all cores)
    repeats : int >= 1, timed repeats per point
    budget : Budget or None (a default one)
    progress : callable or None
        ``progress(done, total, text)`` before each point and once at the end.
    cells : sequence of str, cell specs

    Returns
    -------
    records : list of dict
        See :func:`measure`.
    skipped : list of tuple
        ``(cell, label, n, batch, dtype, reason)``.

    Notes
    -----
    Cost: each point's warm-up and ``repeats`` timed rounds of about 20 ms or one step.
    """
    budget = budget or Budget()
    points = [(c, d, b, s, n) for c in cells for d in dtypes for b in batches for s in specs for n in sorted(sizes)]
    records, skipped = [], []
    for i, (cell, dtype, batch, spec, n) in enumerate(points):
        label, cell = canonical(spec), canonical_cell(cell)
        if progress:
            progress(i, len(points), f"{cell} {label} n={n} batch={batch} {dtype}")
        key = (cell, label, batch, dtype)
        reason = budget.skip_reason(key, n)
        if reason:
            skipped.append((cell, label, n, batch, dtype, reason))
            continue
        rec = measure(spec, n, batch, dtype, backend, n_threads, repeats, cell=cell)
        budget.record(key, n, rec["time"], rec["state_bytes_per_sample"] * batch)
        records.append(rec)
    if progress:
        progress(len(points), len(points), "done")
    return records, skipped
