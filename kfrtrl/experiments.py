"""The experiments of the ``kfrtrl`` command as library functions that return their results.

Each function takes the command's options as keyword arguments of the same
names (``kfrtrl copy --hidden 64`` is ``copy(setup=Setup(hidden=64))``) and
returns rows (dicts) that the command prints; nothing here parses or prints::

    from kfrtrl import experiments
    rows = experiments.compare(setup=experiments.Setup(hidden=16, steps=2000))   # the default estimators
    run = experiments.series(synthetic="lgss", estimators=["kf", "rtrl"], setup=experiments.Setup(batch=1, steps=3000))

:class:`Setup` holds what every training run shares (model, optimiser,
seed, backend); a new shared option is a new field there (and a flag of the
same name in :mod:`kfrtrl.cli`). ``progress(done, total, text)``, where
accepted, is called as the run goes (the command draws a bar with it).
"""
import dataclasses
import os
import time

import numpy as np

from . import diagnostics, longrun, optim, papers, scaling, tasks, train
from . import synthetic as _synthetic
from ._validation import check_choice, check_int
from .estimators import COMPARE_DEFAULT, NOISE_DEFAULT, TRAIN_DEFAULT, make_estimator
from .series import Series, check_table, load_table, resolve_columns


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every training run shares (the flags of ``kfrtrl copy``, ``charlm`` and ``compare``).

    Parameters
    ----------
    cell : str, the recurrent cell, a spec of :func:`kfrtrl.scaling.parse_cell` ("elman", "rhn2", "lru", ...)
    depth : int or None, an RHN's micro-layers (``cell="rhn", depth=L`` is ``cell="rhnL"``)
    dtype : "float32" or "float64"
    init_std : float or None, draw every weight (readout and biases included) from N(0, init_std²)
    faithful : bool, the OK authors' code details (:data:`kfrtrl.papers.FAITHFUL`): an RHN's candidate
        2σ(z) − 1, only the cell's gradient clipped, the copy curriculum's running loss from 1 bit,
        T_cur compared when a sequence ends
    hidden, batch, steps : int, hidden units, parallel streams, online steps (a resumed run's total)
    lr, clip, update_every : Adam learning rate, gradient-norm clip, steps per update
    seed : int, seeds cell, readout, estimator and data (the same for every estimator of a comparison)
    backend, threads : kernel backend and thread count (int or None) of the estimator
    rank : int, the rank of an estimator taking one, when its spec has no ``:k``
    """

    cell: str = "elman"
    depth: int = None
    dtype: str = "float64"
    init_std: float = None
    faithful: bool = False
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


def make_cell(setup, n_in, rng=None):
    """The cell of ``setup`` (cell, depth, dtype, hidden; with ``faithful`` an RHN's candidate is 2σ(z) − 1).

    Parameters
    ----------
    setup, n_in, rng : Setup, inputs (int), None / int / numpy.random.Generator
    """
    name, depth = scaling.parse_cell(setup.cell)
    if setup.depth is not None and (name, depth) != ("rhn", None):
        raise ValueError(f"depth: only the cell 'rhn' takes a depth (rhnL gives it too), got cell {setup.cell!r}")
    spec = setup.cell if setup.depth is None else f"rhn{setup.depth}"
    options = {"candidate": papers.FAITHFUL["candidate"]} if name == "rhn" and setup.faithful else {}
    return scaling.make_cell(spec, setup.hidden, setup.dtype, rng, n_in=n_in, **options)


def build_trainer(setup, spec, n_in, n_out=None, **options):
    """Cell, estimator and trainer for ``spec``; the seeds come from ``setup.seed`` alone.

    Parameters
    ----------
    setup, spec : Setup, estimator spec
    n_in, n_out : int, inputs and readout size (n_out None: ``n_in``)
    **options
        Further :class:`kfrtrl.train.Trainer` arguments (``loss``, ``optimizer``, ``lr`` ...).
    """
    cell_rng, est_rng, readout_rng, _, init_rng = np.random.default_rng(setup.seed).spawn(5)
    cell = make_cell(setup, n_in, cell_rng)
    est = make_estimator(spec, cell, setup.batch, est_rng, setup.backend, setup.threads, rank=setup.rank)
    options = {"lr": setup.lr, "clip": setup.clip, "update_every": setup.update_every, "rng": readout_rng,
               "clip_scope": papers.FAITHFUL["clip_scope"] if setup.faithful else "all", **options}
    trainer = train.Trainer(est, n_in if n_out is None else n_out, **options)
    if setup.init_std is not None:
        papers.init_normal({**cell.params(), "readout": trainer.readout.W}, setup.init_std, init_rng)
    return trainer


def _task_rng(setup):
    return np.random.default_rng(setup.seed).spawn(4)[3]


def _train(setup, spec, task, observe, columns, save=None, resume=None, progress=None, log=None, save_every=None):
    """Train up to step ``setup.steps``; ``observe(trainer, task)`` -> ({column: value}, text) at 100 log points.

    ``log``: a curve log path (:class:`kfrtrl.longrun.CurveLog`, columns ``columns``); ``save``: the
    checkpoint, written atomically at the end and every ``save_every`` steps; ``resume``: a checkpoint
    to continue from (up to ``setup.steps``, the log's rows after it dropped).
    Returns (trainer, curve (logged steps, values of columns[0]) of this invocation, seconds of it).
    """
    trainer = build_trainer(setup, spec, task.n_in)
    config = _run_config(setup, spec, task)
    if resume:
        train.load_checkpoint(resume, trainer, task, config)
        if trainer.steps >= setup.steps:
            raise ValueError(f"steps: expected more than the checkpoint's {trainer.steps} steps, got {setup.steps}")
    steps, values = [], []

    def logged(tr, tk):
        row, text = observe(tr, tk)
        steps.append(tr.steps)
        values.append(row[columns[0]])
        if progress:
            progress(tr.steps, setup.steps, f"{spec} {text}")
        return row

    start = time.perf_counter()
    curve_log = None if log is None else longrun.CurveLog(log, columns, trainer.steps if resume else None)
    try:
        longrun.train_to(trainer, task, setup.steps, logged, curve_log, max(1, setup.steps // 100), save, save_every,
                         config=config)
    finally:
        if curve_log is not None:
            curve_log.close()
    return trainer, (np.array(steps), np.array(values)), time.perf_counter() - start


def _run_config(setup, spec, task):
    """What a checkpoint records of a run and a resume must repeat: the setup but the run's
    length and threads, the estimator and the task."""
    config = {k: v for k, v in dataclasses.asdict(setup).items() if k not in ("steps", "threads")}
    config.update(estimator=spec, task=type(task).__name__)
    if isinstance(task, tasks.CharLM):
        config.update(reset_every=task.reset_every, vocabulary=task.corpus.vocab)
    return config


def copy(estimator=TRAIN_DEFAULT, setup=Setup(steps=20000), save=None, resume=None, progress=None, log=None,
         save_every=None):
    """Train on the copy task with the curriculum (:class:`kfrtrl.tasks.CopyTask`).

    Parameters
    ----------
    estimator, setup : estimator spec, Setup
    save, resume : checkpoint paths or None (:func:`kfrtrl.train.save_checkpoint`)
    progress : callable or None, ``progress(done, total, text)``
    log, save_every : curve log path (step, T_cur, running_loss, seconds); also save every this many steps

    Returns
    -------
    dict
        {"estimator", "T_cur" (length reached), "running loss", "seconds", "curve": (steps, T_cur)}.
    """
    faithful = papers.FAITHFUL if setup.faithful else {}
    curriculum = tasks.Curriculum(start_value=faithful.get("curriculum_start"))
    task = tasks.CopyTask(setup.batch, curriculum, rng=_task_rng(setup), dtype=setup.dtype,
                          check=faithful.get("check", "step"))

    def observe(_, tk):
        loss = tk.curriculum.running_loss
        return {"T_cur": tk.T_cur, "running_loss": loss}, f"T_cur {tk.T_cur} loss {loss:.3f}"

    _, curve, seconds = _train(setup, estimator, task, observe, ["T_cur", "running_loss"], save, resume, progress,
                               log, save_every)
    return {"estimator": estimator, "T_cur": task.T_cur, "running loss": task.curriculum.running_loss,
            "seconds": seconds, "curve": curve}


def charlm(corpus, estimator=TRAIN_DEFAULT, setup=Setup(lr=3e-3), reset_every=None, valid_chars=None, save=None,
           resume=None, progress=None, log=None, save_every=None, log_valid=False, valid_burn_in=0):
    """Train a character-level language model on ``corpus`` (:func:`kfrtrl.tasks.load_corpus`).

    Parameters
    ----------
    corpus, estimator, setup : kfrtrl.tasks.Corpus, estimator spec, Setup
    reset_every : zero the state every this many characters (training and validation; None: never)
    valid_chars : evaluate on the first this many validation characters (None: all)
    save, resume, progress, log, save_every : as for :func:`copy` (the log's value column: train_bpc)
    log_valid : bool, also evaluate the validation BPC (on ``valid_chars``) at each of the 100 log points:
        the log gets a valid_bpc column and the returned curve is the validation BPC's. Training is
        unchanged (evaluation does not touch the trainer's state); each evaluation costs one forward pass
        per validation character, counted in the log's seconds.
    valid_burn_in : int >= 0, characters each validation chunk's state runs over first, uncounted
        (:func:`kfrtrl.tasks.validation_bpc`'s ``burn_in``)

    Returns
    -------
    dict
        {"estimator", "train bpc", "valid bpc", "seconds", "curve": (steps, training bpc, or validation bpc
        with ``log_valid``)}.
    """
    task = tasks.CharLM(corpus, setup.batch, reset_every=reset_every, rng=_task_rng(setup), dtype=setup.dtype)
    columns = ["valid_bpc", "train_bpc"] if log_valid else ["train_bpc"]
    last = {}

    def valid_bpc(trainer):
        return tasks.validation_bpc(trainer, corpus, reset_every=reset_every, max_chars=valid_chars,
                                    burn_in=valid_burn_in)

    def observe(trainer, _):
        last["train_bpc"] = trainer.metrics(reset=True)["bpc"]
        if log_valid:
            last["valid_bpc"] = valid_bpc(trainer)
        return dict(last), " ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in last.items())

    trainer, curve, seconds = _train(setup, estimator, task, observe, columns, save, resume, progress, log,
                                     save_every)
    bpc = last["valid_bpc"] if log_valid else valid_bpc(trainer)
    return {"estimator": estimator, "train bpc": float(last["train_bpc"]), "valid bpc": bpc, "seconds": seconds,
            "curve": curve}


def compare(estimators=COMPARE_DEFAULT, task="copy", corpus=None, setup=Setup(), reset_every=None,
            valid_chars=None, progress=None, log=None, log_valid=False, valid_burn_in=0):
    """Each estimator on the same task, cell initialisation and seed -> a list of :func:`copy` or :func:`charlm` rows.

    Parameters
    ----------
    estimators, setup : estimator specs, Setup
    task : "copy" or "charlm" (``corpus`` None: the bundled text)
    corpus, reset_every, valid_chars, progress, log_valid, valid_burn_in : as for :func:`charlm`
    log : None or a curve log path; with several estimators one log each, ``.<spec>`` before the extension
    """
    if task not in ("copy", "charlm"):
        raise ValueError(f"task: expected 'copy' or 'charlm', got {task!r}")
    if task == "charlm" and corpus is None:
        corpus = tasks.load_corpus()                  # the bundled tinyshakespeare
    logs = {spec: _log_path(log, spec) if len(estimators) > 1 else log for spec in estimators}
    if task == "copy":
        return [copy(spec, setup, progress=progress, log=logs[spec]) for spec in estimators]
    return [charlm(corpus, spec, setup, reset_every, valid_chars, progress=progress, log=logs[spec], log_valid=log_valid,
                   valid_burn_in=valid_burn_in) for spec in estimators]


def _log_path(log, spec):
    """``log`` with ``.<spec>`` (as a label: ``ok-2``) before its extension (None stays None)."""
    if log is None:
        return None
    root, ext = os.path.splitext(log)
    return f"{root}.{scaling.canonical(spec)}{ext}"


def series(data=None, target=None, inputs=None, horizon=1, synthetic=None, estimators=("ok:2",),
           setup=Setup(batch=1, steps=10000, lr=1e-2), optimizer="adam", lr_tau=None, lr_rho=1.0, kalman_gamma=0.01,
           kalman_damping=1e-3, kalman_rank=0, state=3, memory=None, lag=None, obs_noise=1.0, impact=0.5, length=None,
           save=None, resume=None, progress=None):
    """Online regression on a numeric series (:class:`kfrtrl.series.Series`), each estimator on the same data and seed.

    Parameters
    ----------
    data : (T, C) or (B, T, C) float array, or a CSV / NPY path (:func:`kfrtrl.series.load_table`), or None
    target, inputs : column names or indices of ``data`` (list or comma-separated); inputs None: all columns
    horizon : int >= 1, predict ``horizon`` rows ahead
    synthetic : instead of ``data``, ``"lgss"`` (:func:`kfrtrl.synthetic.lgss_model`: ``state``, ``memory``
        (default 100), ``obs_noise``), ``"lob"`` (:func:`kfrtrl.synthetic.lob`: ``memory``, default 25,
        ``impact``, ``lag``, default 0) or ``"delay"`` (:func:`kfrtrl.synthetic.delay`: ``lag``, default 5),
        ``setup.batch`` streams of ``length`` rows
        (default ``setup.steps + horizon + 1``) drawn from ``setup.seed``; target and inputs default to
        the series' own
    estimators : sequence of estimator specs
    setup : :class:`Setup` (its ``lr`` is the schedule's initial rate)
    optimizer : "adam", "sgd" or "kalman" (:class:`kfrtrl.optim.KalmanFilter` with ``kalman_gamma``,
        ``kalman_damping``, ``kalman_rank``)
    kalman_gamma, kalman_damping, kalman_rank : the filter's γ, λ and rank
    lr_tau, lr_rho : the schedule lr / (1 + t/lr_tau)^lr_rho (:class:`kfrtrl.optim.Schedule`)
    state, memory, lag, obs_noise, impact, length : the synthetic series' (:func:`kfrtrl.synthetic.generate`)
    save, resume, progress : checkpoint paths (one estimator); ``progress(done, total, text)``

    Returns
    -------
    dict
        ``{"data": description, "optimal": the Kalman-optimal stationary MSE (lgss, horizon 1) or None,
        "rows": [{"estimator", "steps", "mse", "naive_mse", "const_mse", ["kalman_mse",] "ratio_naive",
        "ratio_const", ["ratio_optimal",] "seconds"}], "curves": {estimator: (steps, windowed MSE)}}``:
        metrics over the last 10 % of the steps (:meth:`kfrtrl.series.Series.metrics`); ``kalman_mse`` is
        the Kalman filter's on the same steps (lgss, horizon 1, no wrap round).
    """
    if (data is None) == (synthetic is None):
        raise ValueError(f"data, synthetic: expected exactly one of a table and a synthetic series name, got "
                         f"{'neither' if data is None else 'both'}")
    if synthetic is None and target is None:
        raise ValueError("target: expected the target column(s) of data, got None")
    if (save or resume) and len(estimators) != 1:
        raise ValueError(f"estimators: expected one estimator with save or resume, got {list(estimators)}")
    table, names, target, inputs, model, what = _series_data(data, target, inputs, horizon, synthetic, setup, state,
                                                             memory, lag, obs_noise, impact, length)

    def make_task():
        return Series(table, target, inputs, horizon=horizon, batch_size=setup.batch, dtype=setup.dtype, names=names)

    first = make_task()                               # bad columns raise before any training
    optimal = _synthetic.kalman_mse(model) if model is not None and horizon == 1 else None
    errors = None if optimal is None else np.array([_synthetic.kalman_errors(model, ys) for ys in table])
    schedule = optim.Schedule(setup.lr, lr_tau, lr_rho)
    config = {k: v for k, v in dataclasses.asdict(setup).items() if k not in ("steps", "threads")}
    config.update(task="Series", data=None if synthetic else what, target=first.targets, inputs=first.inputs,
                  horizon=horizon, synthetic=synthetic, optimizer=optimizer, lr_tau=lr_tau, lr_rho=lr_rho,
                  kalman_gamma=kalman_gamma, kalman_damping=kalman_damping, kalman_rank=kalman_rank, state=state,
                  memory=memory, lag=lag, obs_noise=obs_noise, length=table.shape[-2] if synthetic else None)
    if synthetic == "lob":
        config.update(impact=impact)
    rows, curves = [], {}
    for spec in estimators:
        task = make_task()
        kind = optimizer
        if optimizer == "kalman":
            kind = optim.KalmanFilter(kalman_gamma, kalman_damping, kalman_rank, rng=_series_rngs(setup)[0])
        seconds = _series_run(setup, spec, task, save, resume, progress, dict(config, estimator=spec), loss="mse",
                              optimizer=kind, lr=schedule)
        m = task.metrics(last=0.1)
        if errors is not None and task.steps < errors.shape[1]:      # no wrap: the filter saw the same steps
            m["kalman_mse"] = float(errors[:, task.steps - m["steps"]:task.steps].mean())
            m["ratio_optimal"] = m["mse"] / m["kalman_mse"]
        label = spec if optimizer != "kalman" else f"{spec}+kalman"
        rows.append({"estimator": label, **m, "seconds": seconds})
        curves[label] = task.curve(max(1, setup.steps // 100))
    return {"data": what, "optimal": optimal, "rows": rows, "curves": curves}


def _series_run(setup, spec, task, save, resume, progress, config, **options):
    """Train ``setup.steps`` more steps (after ``resume``'s) of ``spec`` on ``task`` -> seconds.

    ``config``: what the checkpoint records and a resume must repeat (every option but the run's
    length, threads and outputs; a synthetic series' rows, which follow ``steps`` by default).
    """
    trainer = build_trainer(setup, spec, task.n_in, task.n_out, **options)
    if resume:
        train.load_checkpoint(resume, trainer, task, config)
    log_every = max(1, setup.steps // 100)

    def callback(step):
        if progress and (step % log_every == 0 or step == setup.steps):
            progress(step, setup.steps, f"{spec} mse {task.metrics(last=log_every / step)['mse']:.4g}")

    start = time.perf_counter()
    train.run(trainer, task, setup.steps, callback)
    seconds = time.perf_counter() - start
    if save:
        train.save_checkpoint(save, trainer, task, config)
    return seconds


def _series_rngs(setup):
    """(Kalman filter's, synthetic data's) generators: after those of :func:`build_trainer`."""
    return np.random.default_rng(setup.seed).spawn(5)[3:]


def _series_data(data, target, inputs, horizon, synthetic, setup, state, memory, lag, obs_noise, impact, length):
    """-> (table, column names or None, target, inputs, the LGSS model or None, description)."""
    if synthetic is None:
        if isinstance(data, (str, os.PathLike)):
            (table, names), what = load_table(data), os.fspath(data)
        else:
            table, names, what = check_table(data), None, f"array of shape {np.shape(data)}"
        resolve_columns(target, names, table.shape[-1], "target")
        return table, names, target, inputs, None, what
    check_choice("synthetic", synthetic, ("lgss", "lob", "delay"))
    length = setup.steps + horizon + 1 if length is None else check_int("length", length, 2)
    table, names, default_target, default_inputs, model, what = _synthetic.generate(
        synthetic, setup.batch, length, _series_rngs(setup)[1], state, memory, lag, obs_noise, impact)
    return table, names, target or default_target, inputs or default_inputs, model, what


def noise(estimators=NOISE_DEFAULT, sizes=(8, 16, 32, 64), chains=100, steps=60, burn_in=20, every=2, probes=2,
          rank=1, seed=0, backend="auto", over_time=None, progress=None, model=None):
    """Gradient noise and bias of each estimator against exact RTRL, per size (:func:`kfrtrl.diagnostics.gradient_noise`).

    Parameters
    ----------
    estimators, sizes : estimator specs, hidden sizes
    chains, steps, burn_in, every, probes, rank, seed, backend : of
        :func:`kfrtrl.diagnostics.gradient_noise` (n_chains, steps, burn_in, every, n_probes, rank, rng, backend)
    over_time : None, or W: also pool the relative variances over W consecutive windows of the measured steps.
    progress : callable or None, ``progress(done, total, text)``
    model : None (an Elman cell, float64, its own initialisation) or a :class:`Setup` whose cell,
        depth, dtype, init_std and faithful give the cell (its hidden size is each of ``sizes``)

    Returns {"rows": [{"estimator", "n", "rel var grad", "rel var G", "z", "bias", "bias floor", "cos",
    "seconds"}, ...],
    "over_time": [{"estimator", "n", "steps", "rel var grad", "rel var G"}, ...] (empty without over_time),
    "curves": {label: (x, relative gradient variance)}: against n, or against t with over_time}.
    """
    check_int("chains", chains, 2)          # a variance needs two chains
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
                                            every=every, n_probes=probes, rank=rank, rng=seed, backend=backend,
                                            cell=None if model is None else _cell_factory(model))
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


def _cell_factory(model):
    """``(n_in, n_hidden, rng) -> Cell`` of a :class:`Setup`'s model fields (for the noise diagnostics)."""

    def make(n_in, n_hidden, rng):
        cell_rng, init_rng = rng.spawn(2)
        cell = make_cell(dataclasses.replace(model, hidden=n_hidden), n_in, cell_rng)
        if model.init_std is not None:
            papers.init_normal(cell.params(), model.init_std, init_rng)
        return cell

    return make


def bench(estimators=None, sizes=None, batches=None, dtypes=None, cells=None, quick=False, backend="auto", threads=1,
          repeats=None, source=None, progress=None):
    """Time one online step per estimator, cell and size (:func:`kfrtrl.scaling.run`) -> (records, skipped).

    Parameters
    ----------
    estimators, sizes, batches, dtypes, cells : lists or None (the grid's, :func:`kfrtrl.scaling.grid`)
    quick : bool, the quick grid (float64, batch 1)
    backend, threads : kernel backend and threads per step
    repeats : timed repeats per point (default 3 with ``quick``, else 5)
    source : a JSON path to report instead of measuring (:func:`kfrtrl.scaling.load_records`)
    progress : callable or None, ``progress(done, total, text)``
    """
    if source:
        return scaling.load_records(source), []
    g = scaling.grid(full=not quick)
    return scaling.run(estimators or g["estimators"], sizes or g["sizes"], batches or g["batches"],
                       dtypes or g["dtypes"], backend=backend, n_threads=threads,
                       repeats=repeats or (3 if quick else 5), progress=progress, cells=cells or g["cells"])
