"""``kfrtrl series``: online regression on a CSV/NPY series or a synthetic one (see :mod:`kfrtrl.series`)."""
import argparse
import json
import sys
import time

import numpy as np

from . import _arguments, cli, estimators, optim, scaling, synthetic, train
from .series import Series, load_table, resolve_columns


def _unit_float(text):
    """argparse type: a real number in (0, 1]."""
    value = _arguments.positive_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _rho(text):
    """argparse type: a real number in (1/2, 1]."""
    value = _arguments.positive_float(text)
    if not 0.5 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0.5, 1], got {text!r}")
    return value


def add_series(sub):
    p = sub.add_parser(
        "series", help="online regression on a numeric series; prints 'mse <value>' and the ratios",
        description="Train online on a CSV/NPY file (--target COL, --inputs COLS, --horizon K) or a synthetic "
                    "series (--synthetic lgss|lob|delay) and print the prequential MSE over the last 10%% of the steps "
                    "with its ratios to the naive last-value predictor, the best constant and (lgss) the "
                    "Kalman-optimal predictor: 'mse <v> ratio_naive <r> ratio_const <r> [ratio_optimal <r>]'.")
    p.add_argument("file", nargs="?", type=_arguments.readable_path, default=None, metavar="FILE",
                   help="a CSV (header optional) or NPY table of numbers")
    p.add_argument("--synthetic", choices=("lgss", "lob", "delay"), default=None, help="use a synthetic series instead of FILE")
    p.add_argument("--target", default=None, metavar="COL", help="target column(s), names or indices (FILE; "
                   "default for --synthetic: the observation / the mid-price change)")
    p.add_argument("--inputs", default=None, metavar="COLS", help="input columns, comma-separated (default: all)")
    p.add_argument("--horizon", type=_arguments.positive_int, default=1, metavar="K", help="predict K rows ahead (default: 1)")
    p.add_argument("--estimator", type=_arguments.train_specs, default=["ok:2"], metavar="E[,E...]",
                   help=f"one or several (same data and seeds) of {estimators.describe_specs()}, "
                        "optionally NAME:k (default: ok:2)")
    _arguments.add_model_args(p, steps=10000, lr=1e-2, batch=1)
    p.add_argument("--optimizer", choices=train.OPTIMIZER_NAMES, default="adam", help="(default: adam)")
    p.add_argument("--lr-tau", type=_arguments.positive_float, default=None, metavar="TAU",
                   help="decreasing rate lr / (1 + t/TAU)^RHO (default: constant)")
    p.add_argument("--lr-rho", type=_rho, default=1.0, metavar="RHO", help="decay exponent in (0.5, 1] (default: 1)")
    p.add_argument("--kalman-gamma", type=_unit_float, default=0.01, metavar="G",
                   help="kalman: weight of the newest Fisher sample (default: 0.01)")
    p.add_argument("--kalman-damping", type=_arguments.positive_float, default=1e-3, metavar="L",
                   help="kalman: damping added to the Fisher estimate (default: 0.001)")
    p.add_argument("--kalman-rank", type=int, default=0, metavar="K",
                   help="kalman: 0 for a diagonal Fisher estimate, else its rank (default: 0)")
    p.add_argument("--state", type=_arguments.positive_int, default=3, metavar="N", help="lgss: hidden state dimension (3)")
    p.add_argument("--memory", type=_arguments.positive_float, default=None, metavar="M",
                   help="lgss: time constant of the state in steps (default: 100); lob: of the averaged order "
                        "flow the price answers (default: 25)")
    p.add_argument("--lag", type=_arguments.positive_int, default=5, metavar="L",
                   help="delay: the target is the input of L - 1 steps before the current one (default: 5)")
    p.add_argument("--obs-noise", type=_arguments.positive_float, default=1.0, metavar="R",
                   help="lgss: observation noise / signal variance (default: 1)")
    p.add_argument("--length", type=_arguments.positive_int, default=None, metavar="T",
                   help="synthetic: rows per stream (default: --steps + --horizon + 1; give the first run's "
                        "with --resume)")
    _arguments.add_json_arg(p, "the metrics and curves")
    _arguments.add_plot_arg(p, "the MSE (windows of 1%% of the steps) against steps, log scale")
    p.add_argument("--from", dest="source", type=_arguments.readable_path, nargs="+", default=None, metavar="JSON",
                   help="do not train: print the table (and --plot) of files written by --json")
    p.add_argument("--save", type=_arguments.writable_path, default=None, metavar="PATH",
                   help="write a checkpoint at the end (one estimator)")
    p.add_argument("--resume", type=_arguments.readable_path, default=None, metavar="PATH",
                   help="continue from a checkpoint of the same configuration (one estimator)")
    p.set_defaults(func=_cmd_series)


def _error(text):
    print(f"kfrtrl series: error: {text}", file=sys.stderr)
    return 2


def _data(args):
    """-> (data, column names or None, targets, inputs, the LGSS model or None, description)."""
    data_rng = np.random.default_rng(args.seed).spawn(5)[4]
    length = args.length or args.steps + args.horizon + 1
    if args.synthetic == "lgss":
        memory = args.memory or 100.0
        model = synthetic.lgss_model(args.state, memory, args.obs_noise, rng=data_rng)
        data = synthetic.sample(model, length, batch=args.batch, rng=data_rng)
        return data, None, args.target or "0", args.inputs, model, \
            f"lgss (state {args.state}, memory {memory:g}, obs-noise {args.obs_noise:g})"
    if args.synthetic == "delay":
        data = np.stack([synthetic.delay(length, lag=args.lag, rng=g) for g in data_rng.spawn(args.batch)])
        return data, None, args.target or "1", args.inputs or "0", None, f"delay (lag {args.lag})"
    if args.synthetic == "lob":
        streams = data_rng.spawn(args.batch)
        memory = args.memory or 25.0
        data = np.stack([synthetic.lob(length, memory=memory, rng=g) for g in streams])
        return data, list(synthetic.LOB_COLUMNS), args.target or "mid_change", args.inputs, None, \
            f"synthetic LOB (memory {memory:g})"
    data, names = load_table(args.file)
    resolve_columns(args.target, names, data.shape[1], "--target")
    return data, names, args.target, args.inputs, None, args.file


def _run(args, spec, data, names, targets, inputs):
    task = Series(data, targets, inputs, horizon=args.horizon, batch_size=args.batch, names=names)
    cell_rng, est_rng, readout_rng, kalman_rng, _ = np.random.default_rng(args.seed).spawn(5)
    cell = scaling.make_cell(args.cell, args.hidden, rng=cell_rng, n_in=task.n_in)
    est = train.make_estimator(spec, cell, args.batch, est_rng, args.backend, args.threads, rank=args.rank)
    optimizer = args.optimizer
    if optimizer == "kalman":
        optimizer = optim.KalmanFilter(args.kalman_gamma, args.kalman_damping, args.kalman_rank, rng=kalman_rng)
    trainer = train.Trainer(est, task.n_out, loss="mse", optimizer=optimizer, clip=args.clip,
                            lr=optim.Schedule(args.lr, args.lr_tau, args.lr_rho),
                            update_every=args.update_every, rng=readout_rng)
    config = _run_config(args, spec)
    if args.resume:
        train.load_checkpoint(args.resume, trainer, task, config)
    bar = cli._progress_bar(sys.stderr)
    log_every = max(1, args.steps // 100)

    def callback(step):
        if step % log_every == 0 or step == args.steps:
            bar(step, args.steps, f"{spec} mse {task.metrics(last=log_every / step)['mse']:.4g}")

    start = time.perf_counter()
    train.run(trainer, task, args.steps, callback)
    seconds = time.perf_counter() - start
    if args.save:
        train.save_checkpoint(args.save, trainer, task, config)
    return task, seconds


#: options that leave the run a checkpoint continues unchanged: its length, threads and outputs
_NOT_RUN = ("command", "func", "steps", "threads", "save", "resume", "json", "plot", "source")


def _run_config(args, spec):
    """What a series checkpoint records and a resume must repeat: every other option, the one
    estimator ``spec`` and the synthetic series' length (by default it follows --steps)."""
    config = {k: v for k, v in vars(args).items() if k not in _NOT_RUN}
    config.update(estimator=spec, task="Series")
    if args.synthetic is not None:
        config["length"] = args.length or args.steps + args.horizon + 1
    return config


def _cmd_series(args):
    if args.source:
        return _report_saved(args)
    if (args.file is None) == (args.synthetic is None):
        return _error("expected a FILE or --synthetic lgss|lob|delay (exactly one)")
    if args.file is not None and args.target is None:
        return _error("expected --target COL with a FILE")
    if args.kalman_rank < 0:
        return _error(f"--kalman-rank: expected an integer >= 0, got {args.kalman_rank}")
    if (args.save or args.resume) and len(args.estimator) > 1:
        return _error("--save and --resume take one estimator")
    if cli._missing_matplotlib(args):
        return 2
    try:
        data, names, targets, inputs, model, what = _data(args)
        Series(data, targets, inputs, horizon=args.horizon, batch_size=args.batch, names=names)  # bad columns: exit 2
    except ValueError as exc:
        return _error(str(exc))
    optimal = synthetic.kalman_mse(model) if model is not None and args.horizon == 1 else None
    errors = None if optimal is None else np.array([synthetic.kalman_errors(model, ys) for ys in data])
    rows, curves = [], {}
    for spec in args.estimator:
        task, seconds = _run(args, spec, data, names, targets, inputs)
        m = task.metrics(last=0.1)
        if errors is not None and task.steps < errors.shape[1]:      # no wrap: the filter saw the same steps
            m["kalman_mse"] = float(errors[:, task.steps - m["steps"]:task.steps].mean())
            m["ratio_optimal"] = m["mse"] / m["kalman_mse"]
        label = spec if args.optimizer != "kalman" else f"{spec}+kalman"
        rows.append({"estimator": label, **m, "seconds": seconds})
        curves[label] = task.curve(max(1, args.steps // 100))
    title = (f"series {what}, hidden {args.hidden}, batch {args.batch}, {args.steps} steps, optimizer "
             f"{args.optimizer}, lr {optim.Schedule(args.lr, args.lr_tau, args.lr_rho)}, seed {args.seed}; last 10% "
             "of the steps" + (f"; Kalman-optimal mse {optimal:.5g} (stationary), kalman_mse: the Kalman filter's "
                               "on the same steps" if optimal is not None else ""))
    return _report(args, title, rows, curves, optimal)


def _report_saved(args):
    """The table, plot and last lines of --json files (one run each or several)."""
    rows, curves, optimal = [], {}, None
    for path in args.source:
        with open(path, encoding="utf-8") as fh:
            payload = json.load(fh)
        rows += payload["rows"]
        for label, c in payload["curves"].items():
            curves[label if label not in curves else f"{label} ({path})"] = (np.array(c["step"]), np.array(c["mse"]))
        optimal = payload["optimal_mse"]
    return _report(args, f"series: {len(rows)} runs from {', '.join(args.source)}", rows, curves, optimal)


def _report(args, title, rows, curves, optimal):
    print(title)
    has_kalman = all("ratio_optimal" in row for row in rows)
    columns = ["estimator", "mse", "naive_mse", "const_mse"] + (["kalman_mse"] if has_kalman else []) + \
        ["ratio_naive", "ratio_const"] + (["ratio_optimal"] if has_kalman else []) + ["seconds"]
    cli._print_rows(rows, columns)
    if args.json:
        _write_json(args.json, rows, curves, optimal)
    _plot(args.plot, curves, optimal)
    for row in rows:
        line = " ".join(f"{k} {row[k]:.5g}" for k in ["mse"] + [c for c in columns if c.startswith("ratio")])
        print(line + (f" estimator {row['estimator']}" if len(rows) > 1 else ""))
    return 0


def _write_json(path, rows, curves, optimal):
    payload = {"optimal_mse": optimal, "rows": rows,
               "curves": {k: {"step": x.tolist(), "mse": y.tolist()} for k, (x, y) in curves.items()}}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
    print(f"wrote {path}")


def _plot(path, curves, optimal):
    if path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label)
    if optimal is not None:
        ax.axhline(optimal, color="k", linestyle="--", label="Kalman-optimal")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("prequential MSE (window mean)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
