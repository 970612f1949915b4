"""Many independent runs in parallel: estimators × seeds × sizes × options, on one machine or a Dask cluster.

A *configuration* is a flat dict of JSON values naming one run: ``task``
(one of :data:`TASKS`: ``"copy"``, ``"charlm"``, ``"series"``, ``"noise"``),
``estimator`` (a spec such as ``"ok:2"``), ``seed`` and the task's options
(``hidden``, ``batch``, ``steps``, ``lr``, ...). :func:`grid` spans the
product; :func:`run` executes the configurations in worker processes, with
joblib's loky backend on this machine or with Dask (a
``distributed.LocalCluster`` when no scheduler address is given), and
appends one JSON line per finished run to ``out`` as it arrives, so a
stopped sweep restarted with the same file runs only what is missing.

Every run is a pure function of its configuration (all randomness is seeded
from ``seed``; see :func:`run_one`), so the backend, the number of workers
and the order of completion change nothing but the ``seconds`` and ``host``
fields. Each worker is pinned to its share of the cores: the estimator's
``n_threads`` (OpenMP kernels), numba's and the BLAS pools' thread counts
(:func:`kfrtrl.threads.limit`).

Examples
--------
>>> from kfrtrl import plotting, sweep
>>> configs = sweep.grid("copy", ["ok:2", "kf"], seeds=[0, 1, 2], hidden=[16, 32], steps=2000)
>>> len(configs)
12
>>> records = sweep.run(configs, backend="loky", out="copy.jsonl")       # doctest: +SKIP
>>> print(sweep.table(records))                                          # doctest: +SKIP
>>> plotting.sweep("copy.png", records)                           # doctest: +SKIP
"""
import dataclasses
import inspect
import itertools
import json
import logging
import numbers
import os
import socket
import time

from . import experiments, tasks, threads
from ._validation import check_choice, check_int
from .estimators import parse_spec

BACKENDS = ("loky", "dask")
#: configuration keys that name a run; everything else in a configuration is a task option
KEYS = ("task", "estimator", "seed")


def grid(task, estimators, seeds, **options):
    """The configurations of every combination of estimator, seed and option values.

    Parameters
    ----------
    task : str
        A task of :data:`TASKS` (``"copy"``, ``"charlm"``, ``"series"``, ``"noise"``).
    estimators : sequence of str
        Estimator specs (``"rtrl"``, ``"ok:2"``, ``"kf"``, ``"tbptt:25"``, ...).
    seeds : sequence of int
    **options
        Task options (:func:`options_of`: ``hidden``, ``batch``, ``steps``, ``lr``, ... as in
        :mod:`kfrtrl.experiments`); a list or tuple value is swept over, any other value is
        fixed. None values are left out (the task's default).

    Returns
    -------
    list of dict
        One configuration per combination, options outermost, then estimators, then seeds.
    """
    known = options_of(task)
    if isinstance(estimators, str) or isinstance(seeds, (int, str)):
        raise TypeError("estimators, seeds: expected sequences (e.g. ['ok:2', 'kf'] and [0, 1, 2])")
    for spec in estimators:
        parse_spec(spec)
    options = {k: v if isinstance(v, (list, tuple)) else [v] for k, v in options.items() if v is not None}
    for name in options:
        if name not in known:
            raise ValueError(f"options: expected options of the {task} task among {known}, got {name!r}")
    names = sorted(options)
    configs = []
    for values in itertools.product(*(options[k] for k in names)):
        for spec in estimators:
            for seed in seeds:
                configs.append({"task": task, "estimator": spec, "seed": check_int("seed", seed, 0),
                                **dict(zip(names, values))})
    return configs


def key(config):
    """The canonical text of a configuration (sorted keys): what identifies a run in the results file.

    Parameters
    ----------
    config : dict of JSON values

    Returns
    -------
    str
    """
    return json.dumps(config, sort_keys=True)


def run_one(config, n_threads=1, kernels="auto"):
    """Run one configuration with at most ``n_threads`` threads; the worker function of :func:`run`.

    Parameters
    ----------
    config : dict
        ``task``, ``estimator``, ``seed`` and task options (see :func:`grid`).
    n_threads : int >= 1
        Threads for the kernels (OpenMP), numba and BLAS during the run.
    kernels : str
        Kernel backend: ``"auto"``, ``"numpy"``, ``"numba"`` or ``"cython"``.

    Returns
    -------
    dict
        ``{"config": config, "result": {name: number}, "metric": name, "seconds": float,
        "host": str}``; ``result`` depends on ``config`` only.
    """
    options = {k: v for k, v in config.items() if k not in KEYS}
    start = time.perf_counter()
    with threads.limit(n_threads):
        result, metric = TASKS[config["task"]][0](config["estimator"], config["seed"], kernels, n_threads, **options)
    result = {k: int(v) if isinstance(v, numbers.Integral) else float(v) for k, v in result.items()}
    return {"config": config, "result": result, "metric": metric,
            "seconds": time.perf_counter() - start, "host": socket.gethostname()}


def run(configs, backend="loky", scheduler=None, out=None, n_jobs=None, n_threads=None, kernels="auto",
        progress=None):
    """Run every configuration not yet in ``out``, in parallel; return all records of ``configs``.

    Parameters
    ----------
    configs : list of dict
        Configurations (see :func:`grid`); duplicates run once.
    backend : {"loky", "dask"}
        joblib's loky process pool on this machine, or a Dask cluster.
    scheduler : str or None
        Dask scheduler address (``"tcp://host:8786"``); None starts a ``LocalCluster`` of
        ``n_jobs`` single-threaded worker processes for the sweep. Only with ``backend="dask"``.
    out : str, os.PathLike or None
        JSON-lines file: each finished run is appended as one line (one ``write`` of the
        whole line, then fsync), and runs already there are skipped (a torn last line
        from a crash is dropped first). None keeps the results in memory only.
    n_jobs : int >= 1 or None
        Runs at a time (local workers); None: every core, at most one per configuration.
        With a scheduler the cluster decides and this is ignored.
    n_threads : int >= 1 or None
        Threads per run; None: the cores divided among the ``n_jobs`` workers (1 with a
        remote scheduler).
    kernels : str
        Kernel backend of every run (``"auto"``, ``"numba"``, ...).
    progress : callable or None
        ``progress(done, total, text)`` after each finished run (and once at the start).

    Returns
    -------
    list of dict
        The records (see :func:`run_one`) of ``configs`` in their order, read from ``out`` for
        the runs done before.
    """
    backend = check_choice("backend", backend, BACKENDS)
    if scheduler is not None and backend != "dask":
        raise ValueError(f"scheduler: expected None with backend {backend!r} (a scheduler is for dask), "
                         f"got {scheduler!r}")
    unique = list({key(c): c for c in configs}.values())
    done = {} if out is None else _load(out)
    todo = [c for c in unique if key(c) not in done]
    cores = os.cpu_count() or 1
    n_jobs = max(1, min(cores, len(todo))) if n_jobs is None else check_int("n_jobs", n_jobs, 1)
    if n_threads is None:
        n_threads = 1 if scheduler is not None else max(1, cores // n_jobs)
    n_threads = check_int("n_threads", n_threads, 1)
    total = len(unique)
    if progress:
        progress(total - len(todo), total, f"{len(todo)} to run, {total - len(todo)} done before")
    if todo:
        runner = _run_loky if backend == "loky" else _run_dask
        for finished, record in enumerate(runner(todo, n_jobs, n_threads, kernels, scheduler), 1):
            done[key(record["config"])] = record
            if out is not None:
                _append(out, record)
            if progress:
                c, metric = record["config"], record["metric"]
                progress(total - len(todo) + finished, total,
                         f"{c['estimator']} seed {c['seed']}: {metric} {record['result'][metric]:.4g}")
    return [done[key(c)] for c in unique]


def _run_loky(configs, n_jobs, n_threads, kernels, scheduler):
    """Records as the runs finish, from a loky pool of ``n_jobs`` processes."""
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend="loky", n_jobs=n_jobs, inner_max_num_threads=n_threads):
        yield from Parallel(return_as="generator_unordered")(
            delayed(run_one)(c, n_threads, kernels) for c in configs)


def _run_dask(configs, n_jobs, n_threads, kernels, scheduler):
    """Records as the runs finish, from the Dask scheduler at ``scheduler`` or a local cluster."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)      # not its start/stop chatter
    try:
        with Client(scheduler if cluster is None else cluster) as client:
            futures = [client.submit(run_one, c, n_threads, kernels, key=f"kfrtrl-run-{i}-{os.getpid()}", pure=False)
                       for i, c in enumerate(configs)]
            for future in as_completed(futures):
                yield future.result()
    finally:
        if cluster is not None:
            cluster.close()


def _load(path):
    """{key: record} of the complete lines of ``path`` (missing file: empty); a torn last line is cut off."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as fh:
        data = fh.read()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):                    # a crash mid-write: rewrite without the torn tail
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(complete)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    records = {}
    for number, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            records[key(record["config"])] = record
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"out: expected a kfrtrl sweep JSON-lines file, got {str(path)!r} "
                             f"(line {number} is not a run record)") from None
    return records


def _append(path, record):
    """Append one record as a single line in one write (O_APPEND), then fsync."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def summarize(records):
    """Group records by everything but the seed: mean, min and max of each group's metric.

    Parameters
    ----------
    records : list of dict
        Records of :func:`run` (or :func:`run_one`).

    Returns
    -------
    list of dict
        ``{"estimator", "options" (dict without task, estimator and seed), "metric", "runs",
        "mean", "min", "max", "seeds" (list)}``, in the order groups first appear.
    """
    groups = {}
    for r in records:
        c = r["config"]
        options = {k: v for k, v in c.items() if k not in KEYS}
        g = groups.setdefault(key({"estimator": c["estimator"], "task": c["task"], **options}),
                              {"estimator": c["estimator"], "options": options, "metric": r["metric"],
                               "values": [], "seeds": []})
        g["values"].append(float(r["result"][r["metric"]]))
        g["seeds"].append(c["seed"])
    rows = []
    for g in groups.values():
        v = g.pop("values")
        rows.append({**g, "runs": len(v), "mean": sum(v) / len(v), "min": min(v), "max": max(v)})
    return rows


def varying_options(groups):
    """The option names whose value differs between the groups of :func:`summarize`, sorted.

    Parameters
    ----------
    groups : list of dict, the rows of :func:`summarize`

    Returns
    -------
    list of str
    """
    names = {k for g in groups for k in g["options"]}
    return sorted(k for k in names if len({json.dumps(g["options"].get(k)) for g in groups}) > 1)


def table(records):
    """A fixed-width text table of :func:`summarize`: one row per estimator and option values that vary.

    Parameters
    ----------
    records : list of dict, records of :func:`run`

    Returns
    -------
    str
        Lines ending in a newline.
    """
    rows = summarize(records)
    varying = varying_options(rows)
    header = ["estimator", *varying, "metric", "runs", "mean", "min", "max"]
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for r in rows:
        cells = [r["estimator"], *(r["options"].get(k) for k in varying), r["metric"], r["runs"],
                 r["mean"], r["min"], r["max"]]
        lines.append("  ".join(f"{c:>12.4g}" if isinstance(c, float) else f"{c!s:>12}" for c in cells))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- one run of each task: (result, metric)


def _split(fn, seed, kernels, n_threads, options):
    """(the ``setup`` of experiment ``fn`` with these fields set, the remaining options)."""
    base = inspect.signature(fn).parameters["setup"].default
    fields = {f.name for f in dataclasses.fields(base)}
    setup = dataclasses.replace(base, seed=seed, backend=kernels, threads=n_threads,
                                **{k: v for k, v in options.items() if k in fields})
    return setup, {k: v for k, v in options.items() if k not in fields}


def _copy(spec, seed, kernels, n_threads, **options):
    setup, rest = _split(experiments.copy, seed, kernels, n_threads, options)
    row = experiments.copy(spec, setup, **rest)
    return {"T_cur": row["T_cur"], "running_loss": row["running loss"]}, "T_cur"


def _charlm(spec, seed, kernels, n_threads, file=None, **options):
    corpus = tasks.load_corpus(file)                 # None: the bundled tinyshakespeare
    setup, rest = _split(experiments.charlm, seed, kernels, n_threads, options)
    row = experiments.charlm(corpus, spec, setup, **rest)
    return {"valid_bpc": row["valid bpc"], "train_bpc": row["train bpc"]}, "valid_bpc"


def _series(spec, seed, kernels, n_threads, **options):
    setup, rest = _split(experiments.series, seed, kernels, n_threads, options)
    row = experiments.series(estimators=[spec], setup=setup, **rest)["rows"][0]
    return {k: v for k, v in row.items() if k not in ("estimator", "seconds")}, "ratio_const"


def _noise(spec, seed, kernels, n_threads, hidden=32, **options):
    row = experiments.noise([spec], sizes=[hidden], seed=seed, backend=kernels, **options)["rows"][0]
    return {"rel_var_grad": row["rel var grad"], "rel_var_G": row["rel var G"], "z": row["z"]}, "rel_var_grad"


#: task name -> (run(spec, seed, kernels, n_threads, **options) -> (result, metric name), the experiment
#: function whose keyword arguments and ``setup`` fields are the task's options)
TASKS = {
    "copy": (_copy, experiments.copy),
    "charlm": (_charlm, experiments.charlm),
    "series": (_series, experiments.series),
    "noise": (_noise, experiments.noise),
}
_NOT_OPTIONS = {"estimator", "estimators", "setup", "corpus", "save", "resume", "save_every", "log", "progress",
                "seed", "backend", "threads", "sizes", "model"}


def options_of(task):
    """The option names a task accepts (its experiment's keywords and ``Setup`` fields, ``hidden`` ...).

    Parameters
    ----------
    task : str, a task of :data:`TASKS`

    Returns
    -------
    list of str, sorted
    """
    run, fn = TASKS[check_choice("task", task, TASKS)]
    params = inspect.signature(fn).parameters
    names = set(params) - _NOT_OPTIONS
    if "setup" in params:
        names |= {f.name for f in dataclasses.fields(params["setup"].default)} - _NOT_OPTIONS
    return sorted(names | (set(inspect.signature(run).parameters) - {"spec", "seed", "kernels", "n_threads",
                                                                      "options"}))
