"""The papers' workloads through the whole training loop, timed against their same-FLOP GEMM bound.

A workload is a list of configurations (cell, size, estimator spec, batch) trained by
:class:`kfrtrl.train.Trainer` on its task's own inputs and resets:

- ``copy``: the copy task of the OK and KF-RTRL papers, n = 128, batch 16, Elman and RHN
  cells, OK of rank 16 (the OK authors' configuration), KF-RTRL and UORO;
- ``charlm``: the OK authors' character-level configuration, RHN n = 256, OK of rank 8,
  batch 32, on a text (by default the bundled tinyshakespeare, 65 symbols against char-PTB's
  50; pass any :class:`kfrtrl.tasks.Corpus`).

Each configuration is timed per training step (reset, cell and influence step, readout,
gradient, optimizer) and set against its *GEMM bound*: the fastest of the two GEMM layouts
with the step's multiply-adds of the propagation, ``W_h (n, n) @ (n, B·K)`` and
``(B·K, n) @ (n, n)`` with K tangents per sample (:func:`bound_columns`), timed in the same run with the same
threads, interleaved with the steps (:func:`time_interleaved`). :func:`measure` returns one record per configuration,
backend, dtype and thread count.
"""
import os
import time
from dataclasses import dataclass

import numpy as np

from . import cells, scaling, tasks
from ._validation import check_choice, check_int
from .threads import limit
from .train import Trainer, make_estimator


@dataclass(frozen=True)
class Config:
    """One configuration of a workload.

    Parameters
    ----------
    cell : {"elman", "rhn"}
    n : int, hidden units
    spec : str, estimator spec
    batch : int, streams
    """

    cell: str
    n: int
    spec: str
    batch: int


WORKLOADS = {
    "copy": tuple(Config(cell, 128, spec, 16) for cell in ("elman", "rhn") for spec in ("ok:16", "kf", "uoro")),
    "charlm": (Config("rhn", 256, "ok:8", 32),),
}
_CELLS = {"elman": cells.Elman, "rhn": cells.RHN}


def default_corpus():
    """The bundled tinyshakespeare text as a :class:`kfrtrl.tasks.Corpus` (65 symbols)."""
    from . import datasets

    return tasks.load_corpus(datasets.tinyshakespeare_path())


def build(config, workload, backend, dtype, n_threads, inputs="task", corpus=None, seed=0):
    """(trainer, next_batch) for ``config``: ``next_batch()`` -> (x, y, reset) of the task.

    Parameters
    ----------
    config : Config
    workload : {"copy", "charlm"}
    backend : str, kernel backend
    dtype : numpy float dtype
    n_threads : int >= 1 or None
    inputs : {"task", "random"}
        The task's inputs and resets, or Gaussian inputs without resets (the kernel
        benchmarks' steady state, to compare against).
    corpus : kfrtrl.tasks.Corpus or None (the bundled text), for "charlm"
    seed : int

    Returns
    -------
    trainer : kfrtrl.train.Trainer
    next_batch : callable
    """
    check_choice("inputs", inputs, ("task", "random"))
    gen = np.random.default_rng(seed)
    if workload == "copy":
        task = tasks.CopyTask(config.batch, rng=gen, dtype=dtype)
    else:
        task = tasks.CharLM(corpus if corpus is not None else default_corpus(), config.batch, rng=gen, dtype=dtype)
    cell = _CELLS[config.cell](task.n_in, config.n, dtype=dtype, rng=gen)
    est = make_estimator(config.spec, cell, batch_size=config.batch, rng=gen, backend=backend, n_threads=n_threads)
    trainer = Trainer(est, task.n_out, rng=gen)
    if inputs == "task":
        return trainer, task.next

    def random_batch():
        x = gen.standard_normal((config.batch, task.n_in)).astype(dtype)
        return x, gen.integers(0, task.n_out, config.batch), None

    return trainer, random_batch


def bound_columns(est, n):
    """Columns of the GEMM bound ``W_h (n, n) @ (n, columns)``: the step's GEMM lower-bound flops
    (:func:`kfrtrl.scaling.gemm_flops`: B·K tangents through H_b for a fused step) over 2 n².

    Parameters
    ----------
    est : kfrtrl estimator
    n : int, hidden units

    Returns
    -------
    int >= 1
    """
    return max(1, round(scaling.gemm_flops(est) / (2 * n * n)))


def _gemm_operands(n, columns, dtype):
    """{layout: (left, right, out)} of the two GEMMs with the flops of ``columns`` tangents through W_h (n, n)."""
    gen = np.random.default_rng(0)
    W = gen.standard_normal((n, n)).astype(dtype)
    pairs = {"W @ wide": (W, gen.standard_normal((n, columns)).astype(dtype)),
             "tall @ W": (gen.standard_normal((columns, n)).astype(dtype), W)}
    return {k: (a, b, np.empty((a.shape[0], b.shape[1]), dtype=dtype)) for k, (a, b) in pairs.items()}


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


#: seconds to wait after the multi-threaded GEMM before timing steps: OpenBLAS's worker threads
#: spin ~2^28 cycles (~0.1 s) after a call before they sleep, and a step timed meanwhile
#: competes with them for the cores (:mod:`kfrtrl.threads`); the training loop itself never
#: wakes them (:meth:`kfrtrl.estimators.Estimator.threads`)
PARK_S = 0.25
#: steps (and GEMMs) per round of :func:`time_interleaved`
ROUND = 5
#: untimed steps after the pause: the first steps after an idle quarter second find the kernels'
#: threads asleep and the caches cold, which a training loop running on does not
REWARM = 2


def time_interleaved(trainer, next_batch, n, columns, n_threads, steps, warmup):
    """(step seconds, GEMM seconds, GEMM layout): medians of ``steps`` training steps and as many
    GEMMs of the faster layout (chosen on 3 tries each), all under ``n_threads`` threads.

    They alternate in rounds of :data:`ROUND` GEMMs, then (with more than one thread) a pause
    of :data:`PARK_S` for BLAS's worker threads to sleep and :data:`REWARM` untimed steps, then
    :data:`ROUND` steps: both medians see the same machine (on a shared machine the GEMM rate
    itself moves by 2x within a minute), and the steps do not compete with the GEMM's spinning
    threads. The same pause comes before the untimed warm-up: the default count's first probe
    (:class:`kfrtrl.threads.AutoThreads`) runs there, and beside the layout tries' spinning threads
    its all-core steps look slow (the RHN KF-RTRL copy step then ran on one thread, ~1.3x slower).

    Parameters
    ----------
    trainer : kfrtrl.train.Trainer
    next_batch : callable, ``() -> (x, y, reset)``
    n : int, hidden units
    columns : int, of the GEMM bound (:func:`bound_columns`)
    n_threads : int >= 1
    steps, warmup : int, timed and untimed steps

    Returns
    -------
    tuple (float, float, str)
    """
    operands = _gemm_operands(n, columns, trainer.cell.dtype)
    step_times, gemm_times = [], []
    with limit(n_threads):
        tries = {k: min(_timed(np.matmul, a, b, out) for _ in range(3)) for k, (a, b, out) in operands.items()}
        layout = min(tries, key=tries.get)
        left, right, out = operands[layout]
        if n_threads > 1:
            time.sleep(PARK_S)
        for _ in range(warmup):
            trainer.step(*next_batch())
        while len(step_times) < steps:
            k = min(ROUND, steps - len(step_times))
            gemm_times += [_timed(np.matmul, left, right, out) for _ in range(k)]
            if n_threads > 1:
                time.sleep(PARK_S)
                for _ in range(REWARM):
                    trainer.step(*next_batch())
            for _ in range(k):
                x, y, reset = next_batch()
                step_times.append(_timed(trainer.step, x, y, reset))
    return float(np.median(step_times)), float(np.median(gemm_times)), layout


def settled_warmup(estimator, warmup):
    """The untimed steps to take before timing ``estimator``: ``warmup``, and with ``n_threads=None``
    at least until its :class:`kfrtrl.threads.AutoThreads` has made its first choice (else the
    timed steps would mix the probe's one-thread and all-core steps).

    Parameters
    ----------
    estimator : kfrtrl.estimators.Estimator
    warmup : int >= 0

    Returns
    -------
    int
    """
    auto = estimator.auto_threads
    return warmup if auto is None else max(warmup, auto.first_choice)


def measure(workload, backends=("numba", "cython"), dtypes=("float32", "float64"), threads=(1, None),
            steps=30, warmup=20, inputs=("task",), corpus=None, progress=None):
    """Time every configuration of ``workload``; -> list of records (dicts).

    threads : thread counts, None meaning the estimator's default (all cores); the step and
        its GEMM bound run with the same count. Each record: workload, cell, n, spec, batch,
        backend, dtype, threads, inputs, step_s (median), gemm_s, gemm_flops, gemm_layout,
        ratio (step_s / gemm_s), s_per_1000 (1000 step_s). ``progress(record)`` is called after each.

    Parameters
    ----------
    workload : {"copy", "charlm"}
    backends : sequence of str
    dtypes : sequence of "float32" / "float64"
    threads : sequence of int or None
    steps, warmup : int, timed and untimed steps per configuration (with None, at least until the
        default has chosen its count: :func:`settled_warmup`)
    inputs : sequence of {"task", "random"}
    corpus : kfrtrl.tasks.Corpus or None
    progress : callable or None

    Returns
    -------
    list of dict
    """
    check_choice("workload", workload, WORKLOADS)
    steps, warmup = check_int("steps", steps, 1), check_int("warmup", warmup, 0)

    records = []
    for config in WORKLOADS[workload]:
        for backend in backends:
            for dtype in dtypes:
                for n_threads in threads:
                    count = (os.cpu_count() or 1) if n_threads is None else n_threads
                    for kind in inputs:
                        trainer, next_batch = build(config, workload, backend, np.dtype(dtype), n_threads, kind, corpus)
                        columns = bound_columns(trainer.estimator, config.n)
                        step_s, gemm_s, layout = time_interleaved(trainer, next_batch, config.n, columns, count,
                                                                  steps, settled_warmup(trainer.estimator, warmup))
                        flops = 2.0 * config.n * config.n * columns
                        record = {"workload": workload, "cell": config.cell, "n": config.n, "spec": config.spec,
                                  "batch": config.batch, "backend": backend, "dtype": dtype, "threads": count,
                                  "inputs": kind, "step_s": step_s, "gemm_s": gemm_s, "gemm_flops": flops,
                                  "gemm_layout": layout, "ratio": step_s / gemm_s, "s_per_1000": 1000 * step_s}
                        records.append(record)
                        if progress is not None:
                            progress(record)
    return records


def format_record(rec):
    """One line: configuration, ms per step, s per 1000 steps, GEMM bound and ratio.

    Parameters
    ----------
    rec : dict, a record of :func:`measure`

    Returns
    -------
    str
    """
    return (f"{rec['workload']:<7}{rec['cell']:<6}n={rec['n']:<4}{rec['spec']:<6}B={rec['batch']:<3}"
            f"{rec['backend']:<7}{rec['dtype']:<8}{rec['threads']}T {rec['inputs']:<7}"
            f"{rec['step_s'] * 1e3:8.2f} ms/step {rec['s_per_1000']:7.1f} s/1000  "
            f"GEMM {rec['gemm_s'] * 1e3:6.2f} ms ({rec['gemm_flops'] / rec['gemm_s'] / 1e9:5.1f} GFLOP/s, "
            f"{rec['gemm_layout']})  ratio {rec['ratio']:5.2f}")
