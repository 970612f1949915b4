"""``kfrtrl series``: the command over :func:`kfrtrl.experiments.series` (parsing and printing only)."""
import argparse
import json
import sys

import numpy as np

from . import _arguments, cli, estimators, experiments, optim, plotting, train
from .checkpoint import atomic_json


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
    p.add_argument("--lag", type=_arguments.nonnegative_int, default=None, metavar="L",
                   help="delay: the target is the input of L - 1 steps before the current one (default: 5); lob: "
                        "steps between the order flow and the informed traders' reaction to it (default: 0)")
    p.add_argument("--impact", type=_unit_float, default=None, metavar="I",
                   help="lob: the informed flow's strength in (0, 1] (default: 0.5)")
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


#: the options of :func:`kfrtrl.experiments.series` the command passes under their own names
_OPTIONS = ("target", "inputs", "horizon", "synthetic", "optimizer", "lr_tau", "lr_rho", "kalman_gamma",
            "kalman_damping", "kalman_rank", "state", "memory", "lag", "obs_noise", "length", "save", "resume")
#: the synthetic series each option of theirs shapes (given with another, it is refused)
_SYNTHETIC_OPTIONS = {"lag": ("delay", "lob"), "impact": ("lob",), "memory": ("lgss", "lob")}


def _cmd_series(args):
    if args.source:
        return _report_saved(args)
    if (args.file is None) == (args.synthetic is None):
        return _error("expected a FILE or --synthetic lgss|lob|delay (exactly one)")
    if args.file is not None and args.target is None:
        return _error("expected --target COL with a FILE")
    for name, takers in _SYNTHETIC_OPTIONS.items():
        if getattr(args, name) is not None and args.synthetic not in takers:
            given = f"--synthetic {args.synthetic}" if args.synthetic else "a FILE"
            return _error(f"--{name}: only --synthetic {' or '.join(takers)} takes it, got {given}")
    if args.kalman_rank < 0:
        return _error(f"--kalman-rank: expected an integer >= 0, got {args.kalman_rank}")
    if (args.save or args.resume) and len(args.estimator) > 1:
        return _error("--save and --resume take one estimator")
    if cli._missing_matplotlib(args):
        return 2
    setup = experiments.Setup.from_options(args)
    options = {name: getattr(args, name) for name in _OPTIONS}
    if args.impact is not None:                  # else experiments.series' default
        options["impact"] = args.impact
    result = experiments.series(args.file, estimators=args.estimator, setup=setup, progress=cli._progress_bar(),
                                **options)
    optimal = result["optimal"]
    title = (f"series {result['data']}, hidden {args.hidden}, batch {args.batch}, {args.steps} steps, optimizer "
             f"{args.optimizer}, lr {optim.Schedule(args.lr, args.lr_tau, args.lr_rho)}, seed {args.seed}; last 10% "
             "of the steps" + (f"; Kalman-optimal mse {optimal:.5g} (stationary), kalman_mse: the Kalman filter's "
                               "on the same steps" if optimal is not None else ""))
    return _report(args, title, result["rows"], result["curves"], optimal)


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
    cli._plot(args.plot, plotting.series, curves, optimal)
    for row in rows:
        line = " ".join(f"{k} {row[k]:.5g}" for k in ["mse"] + [c for c in columns if c.startswith("ratio")])
        print(line + (f" estimator {row['estimator']}" if len(rows) > 1 else ""))
    return 0


def _write_json(path, rows, curves, optimal):
    payload = {"optimal_mse": optimal, "rows": rows,
               "curves": {k: {"step": x.tolist(), "mse": y.tolist()} for k, (x, y) in curves.items()}}
    atomic_json(path, payload)
    print(f"wrote {path}")
