"""The experiments of the ``kfrtrl`` command as library functions that return their results.

Each function takes the command's options as keyword arguments of the same
names (``kfrtrl copy --hidden 64`` is ``copy(setup=Setup(hidden=64))``) and
returns rows (dicts) that the command prints; nothing here parses or prints::

    from kfrtrl import experiments
    rows = experiments.compare(setup=experiments.Setup(hidden=16, steps=2000))   # the default estimators

:class:`Setup` holds what every training run shares (model, optimiser,
seed, backend); a new shared option is a new field there (and a flag of the
same name in :mod:`kfrtrl.cli`). ``progress(done, total, text)``, where
accepted, is called as the run goes (the command draws a bar with it).
"""
import dataclasses
import time

import numpy as np

from . import diagnostics, scaling, tasks, train
from .estimators import COMPARE_DEFAULT, NOISE_DEFAULT, TRAIN_DEFAULT, make_estimator


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every training run shares (the flags of ``kfrtrl copy``, ``charlm`` and ``compare``).

    cell : the recurrent cell, a spec of :func:`kfrtrl.scaling.parse_cell` ("elman", "rhn2", "lru", ...)
    hidden : its hidden units;  batch : parallel streams;  steps : online steps
    lr : Adam learning rate;  clip : gradient-norm clip;  update_every : steps per update
    seed : seeds cell, readout, estimator and data (the same for every estimator of a comparison)
    backend, threads : kernel backend and thread count of the estimator
    rank : the rank of an estimator taking one, when its spec has no ``:k``
    """

    cell: str = "elman"
    hidden: int = 32
    batch: int = 16
    steps: int = 5000
    lr: float = 1e-3
    clip: float = 1.0
    update_every: int = 1
    seed: int = 0
    backend: str = "auto"
    threads: int = None
    rank: int = 1

    @classmethod
    def from_options(cls, options):
        """The setup from an object with attributes of the fields' names (e.g. parsed arguments)."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls) if hasattr(options, f.name)})


def build_trainer(setup, spec, n_io):
    """Cell, estimator and trainer for ``spec``; the seeds come from ``setup.seed`` alone."""
    cell_rng, est_rng, readout_rng, _ = np.random.default_rng(setup.seed).spawn(4)
    cell = scaling.make_cell(setup.cell, setup.hidden, rng=cell_rng, n_in=n_io)
    est = make_estimator(spec, cell, setup.batch, est_rng, setup.backend, setup.threads, rank=setup.rank)
    return train.Trainer(est, n_io, lr=setup.lr, clip=setup.clip, update_every=setup.update_every, rng=readout_rng)


def _task_rng(setup):
    return np.random.default_rng(setup.seed).spawn(4)[3]


def _train(setup, spec, task, observe, save=None, resume=None, progress=None):
    """Run ``setup.steps`` steps; ``observe(trainer, task)`` -> (value, text) at 100 log points.

    Returns (trainer, curve (logged steps, values), seconds).
    """
    trainer = build_trainer(setup, spec, task.n_in)
    config = _run_config(setup, spec, task)
    if resume:
        train.load_checkpoint(resume, trainer, task, config)
    log_every = max(1, setup.steps // 100)
    steps, values = [], []

    def callback(step):
        if step % log_every == 0 or step == setup.steps:
            value, text = observe(trainer, task)
            steps.append(trainer.steps)
            values.append(value)
            if progress:
                progress(step, setup.steps, f"{spec} {text}")

    start = time.perf_counter()
    train.run(trainer, task, setup.steps, callback)
    seconds = time.perf_counter() - start
    if save:
        train.save_checkpoint(save, trainer, task, config)
    return trainer, (np.array(steps), np.array(values)), seconds


def _run_config(setup, spec, task):
    """What a checkpoint records of a run and a resume must repeat: the setup but the run's
    length and threads, the estimator and the task."""
    config = {k: v for k, v in dataclasses.asdict(setup).items() if k not in ("steps", "threads")}
    config.update(estimator=spec, task=type(task).__name__)
    if isinstance(task, tasks.CharLM):
        config.update(reset_every=task.reset_every, vocabulary=task.corpus.vocab)
    return config


def copy(estimator=TRAIN_DEFAULT, setup=Setup(steps=20000), save=None, resume=None, progress=None):
    """Train on the copy task with the curriculum (:class:`kfrtrl.tasks.CopyTask`).

    ``save``/``resume``: checkpoint paths (:func:`kfrtrl.train.save_checkpoint`).
    Returns {"estimator", "T_cur" (length reached), "running loss", "seconds", "curve": (steps, T_cur)}.
    """
    task = tasks.CopyTask(setup.batch, rng=_task_rng(setup))

    def observe(_, tk):
        return tk.T_cur, f"T_cur {tk.T_cur} loss {tk.curriculum.running_loss:.3f}"

    _, curve, seconds = _train(setup, estimator, task, observe, save, resume, progress)
    return {"estimator": estimator, "T_cur": task.T_cur, "running loss": task.curriculum.running_loss,
            "seconds": seconds, "curve": curve}


def charlm(corpus, estimator=TRAIN_DEFAULT, setup=Setup(lr=3e-3), reset_every=None, valid_chars=None, save=None,
           resume=None, progress=None):
    """Train a character-level language model on ``corpus`` (:func:`kfrtrl.tasks.load_corpus`).

    reset_every : zero the state every this many characters (training and validation; None: never)
    valid_chars : evaluate on the first this many validation characters (None: all)
    Returns {"estimator", "train bpc", "valid bpc", "seconds", "curve": (steps, training bpc)}.
    """
    task = tasks.CharLM(corpus, setup.batch, reset_every=reset_every, rng=_task_rng(setup))

    def observe(trainer, _):
        bpc = trainer.metrics(reset=True)["bpc"]
        return bpc, f"train bpc {bpc:.3f}"

    trainer, curve, seconds = _train(setup, estimator, task, observe, save, resume, progress)
    bpc = tasks.validation_bpc(trainer, corpus, reset_every=reset_every, max_chars=valid_chars)
    return {"estimator": estimator, "train bpc": float(curve[1][-1]), "valid bpc": bpc, "seconds": seconds,
            "curve": curve}


def compare(estimators=COMPARE_DEFAULT, task="copy", corpus=None, setup=Setup(), reset_every=None,
            valid_chars=None, progress=None):
    """Each estimator on the same task, cell initialisation and seed -> a list of :func:`copy` or :func:`charlm` rows.

    task : "copy" or "charlm" (then ``corpus`` is required).
    """
    if task not in ("copy", "charlm"):
        raise ValueError(f"task: expected 'copy' or 'charlm', got {task!r}")
    if task == "charlm" and corpus is None:
        corpus = tasks.load_corpus()                  # the bundled tinyshakespeare
    if task == "copy":
        return [copy(spec, setup, progress=progress) for spec in estimators]
    return [charlm(corpus, spec, setup, reset_every, valid_chars, progress=progress) for spec in estimators]


def noise(estimators=NOISE_DEFAULT, sizes=(8, 16, 32, 64), chains=100, steps=60, burn_in=20, every=2, probes=2,
          rank=1, seed=0, backend="auto", over_time=None, progress=None):
    """Gradient noise and bias of each estimator against exact RTRL, per size (:func:`kfrtrl.diagnostics.gradient_noise`).

    over_time : None, or W: also pool the relative variances over W consecutive windows of the measured steps.
    Returns {"rows": [{"estimator", "n", "rel var grad", "rel var G", "z", "bias", "bias floor", "cos",
    "seconds"}, ...],
    "over_time": [{"estimator", "n", "steps", "rel var grad", "rel var G"}, ...] (empty without over_time),
    "curves": {label: (x, relative gradient variance)}: against n, or against t with over_time}.
    """
    n_measured = (steps - burn_in) // every
    if over_time is not None and not 1 <= over_time <= n_measured:
        raise ValueError(f"over_time: expected at most the {n_measured} measured steps, got {over_time}")
    items = [(spec, n) for n in sizes for spec in estimators]
    rows, results = [], []
    for i, (spec, n) in enumerate(items):
        if progress:
            progress(i, len(items), f"{spec} n={n}")
        start = time.perf_counter()
        result = diagnostics.gradient_noise(spec, n_hidden=n, n_chains=chains, steps=steps, burn_in=burn_in,
                                            every=every, n_probes=probes, rank=rank, rng=seed, backend=backend)
        results.append(result)
        summary = result.summary()
        rows.append({"estimator": spec, "n": n, "rel var grad": summary["rel_var_grad"],
                     "rel var G": summary["rel_var_G"], "z": summary["z"], "bias": summary["bias"],
                     "bias floor": summary["bias_floor"], "cos": summary["cos"], "seconds": time.perf_counter() - start})
    if progress:
        progress(len(items), len(items), "done")
    if over_time is None:
        curves = {spec: (np.array(sizes), np.array([r["rel var grad"] for r in rows if r["estimator"] == spec]))
                  for spec in estimators}
        return {"rows": rows, "over_time": [], "curves": curves}
    windows, curves = [], {}
    for result in results:
        first, last, grad, G = result.over_time(over_time)
        label = result.estimator if len(sizes) == 1 else f"{result.estimator} n={result.n_hidden}"
        curves[label] = (last, grad)
        windows += [{"estimator": result.estimator, "n": result.n_hidden, "steps": f"{a}-{b}", "rel var grad": g,
                     "rel var G": v} for a, b, g, v in zip(first, last, grad, G)]
    return {"rows": rows, "over_time": windows, "curves": curves}


def bench(estimators=None, sizes=None, batches=None, dtypes=None, cells=None, quick=False, backend="auto", threads=1,
          repeats=None, source=None, progress=None):
    """Time one online step per estimator, cell and size (:func:`kfrtrl.scaling.run`) -> (records, skipped).

    Unset lists come from the grid (:func:`kfrtrl.scaling.grid`; ``quick``: float64, batch 1).
    repeats : timed repeats per point (default 3 with ``quick``, else 5)
    source : a JSON path to report instead of measuring (:func:`kfrtrl.scaling.load_records`)
    """
    if source:
        return scaling.load_records(source), []
    g = scaling.grid(full=not quick)
    return scaling.run(estimators or g["estimators"], sizes or g["sizes"], batches or g["batches"],
                       dtypes or g["dtypes"], backend=backend, n_threads=threads,
                       repeats=repeats or (3 if quick else 5), progress=progress, cells=cells or g["cells"])
