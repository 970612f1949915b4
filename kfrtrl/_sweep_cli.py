"""``kfrtrl sweep``: the command over :mod:`kfrtrl.sweep` (parsing and printing only)."""
import argparse
import sys

from . import plotting, sweep
from ._arguments import add_plot_arg, backend_name, positive_float, positive_int, size_list, train_specs, writable_path
from .backends import known_backends


def seed_list(text):
    """argparse type: a comma-separated list of integers >= 0."""
    try:
        seeds = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers >= 0 separated by commas, got {text!r}") from None
    if min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return seeds


def option_values(text):
    """argparse type: ``KEY=V[,V...]``, a task option and its values (int, float or text) -> (key, [values])."""
    name, sep, values = text.partition("=")
    if not sep or not name.isidentifier() or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,VALUE...], got {text!r}")
    return name, [_number_or_text(v) for v in values.split(",")]


def _number_or_text(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_sweep(sub):
    """Add ``kfrtrl sweep`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "sweep", help="many independent runs in parallel (estimators × seeds × sizes), loky or Dask",
        description="Run TASK for every estimator, seed, hidden size and --set value in parallel processes "
                    "(joblib's loky on this machine, or a Dask cluster: a local one unless --scheduler), "
                    "append each finished run to --out as one JSON line, skip the runs already there, and "
                    "print a table grouped by estimator. Every run depends on its configuration only.")
    p.add_argument("task", choices=sorted(sweep.TASKS), help="the task to run")
    p.add_argument("--estimators", type=train_specs, required=True, metavar="E,E,...", help="estimator specs")
    p.add_argument("--seeds", type=seed_list, default=[0], metavar="S,S,...", help="seeds (default: 0)")
    p.add_argument("--hidden", type=size_list, default=None, metavar="N,N,...",
                   help="hidden sizes (default: the task's)")
    p.add_argument("--batch", type=positive_int, default=None, metavar="B", help="batch size (default: the task's)")
    p.add_argument("--steps", type=positive_int, default=None, metavar="S",
                   help="online steps (default: the task's)")
    p.add_argument("--lr", type=positive_float, default=None, metavar="LR",
                   help="learning rate (default: the task's)")
    p.add_argument("--set", type=option_values, action="append", default=[], metavar="KEY=V[,V...]",
                   help="any other option of the task (see kfrtrl.sweep.options_of); several values are "
                        "swept over (repeatable)")
    p.add_argument("--backend", choices=sweep.BACKENDS, default="loky",
                   help="loky: processes on this machine; dask: a Dask cluster (default: loky)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster)")
    p.add_argument("--jobs", type=positive_int, default=None, metavar="J",
                   help="runs at a time on this machine (default: one per core)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="K",
                   help="threads per run (default: the cores divided among the jobs)")
    p.add_argument("--kernels", type=backend_name, default="auto", metavar="NAME",
                   help=f"kernel backend of every run, one of {known_backends()} (default: auto)")
    p.add_argument("--out", type=writable_path, required=True, metavar="PATH",
                   help="JSON-lines results file, appended to; the runs already in it are skipped")
    add_plot_arg(p, "every run's result grouped by estimator")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args):
    from .cli import _missing_matplotlib, _plot, _progress_bar      # the command's printing helpers

    if _missing_matplotlib(args):
        return 2
    if args.scheduler is not None and args.backend != "dask":
        print("kfrtrl sweep: error: --scheduler needs --backend dask", file=sys.stderr)
        return 2
    options = {"hidden": args.hidden, "batch": args.batch, "steps": args.steps, "lr": args.lr, **dict(args.set)}
    configs = sweep.grid(args.task, args.estimators, args.seeds, **options)
    records = sweep.run(configs, backend=args.backend, scheduler=args.scheduler, out=args.out, n_jobs=args.jobs,
                        n_threads=args.threads, kernels=args.kernels, progress=_progress_bar())
    print(f"{args.task}: {len(records)} runs, results in {args.out}")
    print(sweep.table(records), end="")
    _plot(args.plot, plotting.sweep, records)
    return 0
