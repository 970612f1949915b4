"""The ``kfrtrl`` command (``kfrtrl --help`` lists the subcommands; ``kfrtrl --version``).

This module only parses and prints: each run is a function of
:mod:`kfrtrl.experiments` called with the parsed options, and every plot is
drawn by :mod:`kfrtrl.plotting`.

Adding a subcommand: write ``_add_<name>(subparsers)``, which adds its parser
and sets ``func`` (called with the parsed arguments, returns the exit code), and
list it in :data:`COMMANDS`. Adding an option every training command shares:
a field of :class:`kfrtrl.experiments.Setup` plus a flag of the same name in
:func:`kfrtrl._arguments.add_model_args`. Argument types and the flags several
commands share live in :mod:`kfrtrl._arguments`, so they read the same everywhere.
Bad arguments end in one line ``kfrtrl <command>: error: ...`` and exit code 2
(no traceback).
"""
import argparse
import os
import sys

import kfrtrl

from . import checkpoint, estimators, experiments, longrun, plotting, scaling, tasks, workloads
from ._arguments import (add_backend_arg, add_cell_args, add_charlm_args, add_json_arg, add_model_args, add_plot_arg,
                         add_run_args, add_training_args, cell_specs, chain_count, positive_int,
                         readable_path, seed_int, size_list, text_corpus, train_specs, unused_options)
from ._sweep_cli import add_sweep


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and a pointer to --help), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------- printing


def _progress_bar(stream=None, width=30):
    """A progress(done, total, text) callback drawing a bar on ``stream`` (default: sys.stderr; one line per
    point if not a tty)."""
    stream = stream or sys.stderr
    tty = stream.isatty()

    def progress(done, total, text):
        filled = width * done // max(total, 1)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}"
        if tty:
            stream.write(f"\r{line:<78.78}" + ("\n" if done == total else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return progress


def _print_rows(rows, columns):
    """A fixed-width table of ``rows`` (dicts) over ``columns``."""
    print("  ".join(f"{c:>14}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>14.4g}" if isinstance(row[c], float) else f"{row[c]!s:>14}" for c in columns))


def _plot(path, draw, *args, **kwargs):
    """``draw(path, *args, **kwargs)``, a function of :mod:`kfrtrl.plotting`, and say so (nothing if path is None)."""
    if path is not None:
        draw(path, *args, **kwargs)
        print(f"wrote {path}")


def _missing_matplotlib(args):
    """Print a one-line error and return True if --plot was asked for without matplotlib."""
    if args.plot is None or plotting.available():
        return False
    print(f"kfrtrl {args.command}: error: --plot needs matplotlib (pip install 'kfrtrl[plot]')", file=sys.stderr)
    return True


def _curves(rows):
    return {row["estimator"]: row["curve"] for row in rows}


# ---------------------------------------------------------------- kfrtrl info


def _add_info(sub):
    p = sub.add_parser("info", help="versions, backends, BLAS and thread counts (kfrtrl.show_config())",
                       description="Show kfrtrl's version, the available backends, BLAS and thread counts.")
    p.set_defaults(func=lambda args: kfrtrl.show_config() or 0)


# ---------------------------------------------------------------- kfrtrl bench


def _add_bench(sub):
    p = sub.add_parser(
        "bench", help="time every estimator against n and fit the scaling exponents",
        description=(
            "Time one online step (step + gradient) of each estimator for each cell and n, directly (median of "
            "repeats, warm-up excluded), and print time, ratio to exact RTRL, ratio to the GEMM lower "
            "bound, memory per sample and the log-log exponent fitted on the upper half of the sizes. "
            "Sizes predicted to take over 2 s per step or 2 GiB of state are skipped. "
            "Default grid: float32 and float64, batch 1 and 16; --quick: float64, batch 1."
        ),
    )
    p.add_argument("--quick", action="store_true", help="float64, batch 1 only, 3 repeats (about a minute)")
    p.add_argument("--sizes", type=size_list, nargs="+", metavar="N",
                   help=f"hidden sizes, spaces or commas (default: {','.join(map(str, scaling.SIZES))})")
    p.add_argument("--estimators", type=train_specs, nargs="+", metavar="E",
                   help=f"estimators, spaces or commas: {estimators.describe_specs()}; NAME-k = NAME:k "
                        f"(default: {','.join(scaling.DEFAULT_ESTIMATORS)})")
    p.add_argument("--cells", type=cell_specs, nargs="+", metavar="C",
                   help=f"cells, {', '.join(scaling.CELLS)} or rhnL (RHN of depth L), spaces or commas "
                        f"(default: {','.join(scaling.DEFAULT_CELLS)})")
    p.add_argument("--batch", type=size_list, nargs="+", metavar="B", help="batch sizes (default: by grid)")
    p.add_argument("--dtype", choices=("float32", "float64"), nargs="+", help="dtypes (default: by grid)")
    p.add_argument("--repeats", type=positive_int, default=None, metavar="R",
                   help="timed repeats per point, the median is reported (default: 3 with --quick, else 5)")
    add_backend_arg(p)
    # 1 thread by default: stable timings on a shared machine, like bench/; --threads 2 to use both cores
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads for kernels and BLAS (default: 1; with --workload: 1 and all cores)")
    add_json_arg(p, "the measurements (pytest-benchmark layout; with --workload: a list of records)")
    add_plot_arg(p, "a log-log plot of time against n with the fitted lines")
    p.add_argument("--workload", choices=sorted(workloads.WORKLOADS), default=None,
                   help="instead of the scaling grid, time the papers' configurations through the training "
                        "loop (Trainer.step on the task's own inputs and resets) against the same-FLOP GEMM "
                        "bound timed in the same run: copy (Elman and RHN, n=128, OK r=16, KF, UORO, batch 16) "
                        "or charlm (RHN n=256, OK r=8, batch 32); takes --dtype, --backend (default: every "
                        "compiled one), --threads, --repeats (timed steps, default 30) and --json")
    p.add_argument("--from", dest="source", type=readable_path, default=None, metavar="JSON",
                   help="do not measure (the options above are ignored): report a pytest-benchmark JSON of "
                        "bench/test_scaling.py or a file written by --json")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args):
    if args.workload:
        return _cmd_workload(args)
    records, skipped = experiments.bench(
        _flat(args.estimators), _flat(args.sizes), _flat(args.batch), args.dtype, _flat(args.cells), args.quick,
        args.backend, args.threads or 1, args.repeats, args.source, progress=_progress_bar())
    print(scaling.format_table(records, skipped), end="")
    if args.json:
        checkpoint.atomic_json(args.json, scaling.to_json(records, skipped))
        print(f"wrote {args.json}")
    if args.plot and not plotting.available():
        print(f"kfrtrl bench: matplotlib is not installed; no plot written to {args.plot} "
              "(pip install 'kfrtrl[plot]')", file=sys.stderr)
    elif args.plot:
        _plot(args.plot, plotting.scaling, records)
    return 0


def _cmd_workload(args):
    """``kfrtrl bench --workload NAME``: one line per configuration, backend, dtype and thread count."""
    compiled = [b for b in kfrtrl.available_backends() if b != "numpy"] or ["numpy"]
    records = workloads.measure(
        args.workload, backends=compiled if args.backend == "auto" else [args.backend],
        dtypes=args.dtype or ("float32", "float64"), threads=(args.threads,) if args.threads else (1, None),
        steps=args.repeats or 30, progress=lambda rec: print(workloads.format_record(rec), flush=True))
    if args.json:
        checkpoint.atomic_json(args.json, records)
        print(f"wrote {args.json}")
    return 0



def _flat(lists):
    """[[a, b], [c]] -> [a, b, c] (None stays None): the items of a repeated comma-list flag."""
    return None if lists is None else [item for items in lists for item in items]


# ---------------------------------------------------------------- kfrtrl copy / charlm / compare


def _add_copy(sub):
    p = sub.add_parser("copy", help="copy task with the papers' curriculum; prints the T_cur reached",
                       description="Train online on the copy (string memorisation) task with the KF-RTRL/OK "
                                   "curriculum and print the sequence length T_cur reached.")
    add_training_args(p, steps=20000, lr=1e-3)
    add_plot_arg(p, "T_cur against steps")
    p.set_defaults(func=_cmd_copy)


def _cmd_copy(args):
    if _missing_matplotlib(args):
        return 2
    row = experiments.copy(args.estimator, experiments.Setup.from_options(args), args.save, args.resume,
                           _progress_bar(), args.log, args.save_every)
    print(f"copy task, cell {args.cell}, hidden {args.hidden}, batch {args.batch}, seed {args.seed}")
    _print_rows([row], _COLUMNS["copy"])
    print(f"T_cur {row['T_cur']}")
    steps, values = row["curve"]
    if args.log:                                         # the whole curve, resumed pieces included
        rows = longrun.read_curve(args.log)
        steps, values = [r["step"] for r in rows], [r["T_cur"] for r in rows]
    _plot(args.plot, plotting.copy_band, {row["estimator"]: ([0, *steps], [1, *values])},
          title=f"copy, {args.cell} n={args.hidden}, batch {args.batch}")
    return 0


def _add_charlm(sub):
    p = sub.add_parser("charlm", help="character-level language model on a text file; prints 'bpc <value>'",
                       description="Train online on a text file (last 10%% held out) and print the validation "
                                   "bits per character as 'bpc <value>'.")
    p.add_argument("file", type=text_corpus, nargs="?", default=None, metavar="FILE",
                   help="a UTF-8 text file (default: the bundled tinyshakespeare)")
    add_training_args(p, steps=5000, lr=3e-3)
    add_charlm_args(p)
    add_plot_arg(p, "the running training bits per character against steps")
    p.set_defaults(func=_cmd_charlm)


def _cmd_charlm(args):
    if _missing_matplotlib(args):
        return 2
    args.file = args.file or tasks.load_corpus()
    row = experiments.charlm(args.file, args.estimator, experiments.Setup.from_options(args), args.reset_every,
                             args.valid_chars, args.save, args.resume, _progress_bar(), args.log, args.save_every,
                             args.log_valid, args.valid_burn_in)
    print(f"charlm, vocabulary {len(args.file.vocab)}, cell {args.cell}, hidden {args.hidden}, batch {args.batch}, "
          f"seed {args.seed}")
    _print_rows([row], _COLUMNS["charlm"])
    print(f"bpc {row['valid bpc']:.4f}")
    _plot(args.plot, plotting.curves, _curves([row]), _charlm_ylabel(args))
    return 0


#: the printed columns and the plotted quantity of each task's rows
_COLUMNS = {"copy": ["estimator", "T_cur", "running loss", "seconds"],
            "charlm": ["estimator", "train bpc", "valid bpc", "seconds"]}


def _charlm_ylabel(args):
    return f"{'validation' if args.log_valid else 'training'} bits per character"


def _add_compare(sub):
    p = sub.add_parser("compare", help="several estimators on the same task and seed, one table",
                       description="Run each estimator on the same task, cell initialisation and seed; print "
                                   "T_cur (copy) or validation bits per character (charlm).")
    p.add_argument("--task", choices=tuple(_COLUMNS), default="copy", help="task (default: copy)")
    p.add_argument("--file", type=text_corpus, default=None, metavar="FILE", help="text file for --task charlm (default: the bundled tinyshakespeare)")
    p.add_argument("--estimators", type=train_specs, default=list(estimators.COMPARE_DEFAULT), metavar="E,E,...",
                   help=f"estimators (default: {','.join(estimators.COMPARE_DEFAULT)})")
    add_model_args(p, steps=5000, lr=1e-3)
    add_run_args(p)
    add_charlm_args(p)
    add_plot_arg(p, "every run's curve against steps")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args):
    if _missing_matplotlib(args):
        return 2
    rows = experiments.compare(args.estimators, args.task, args.file, experiments.Setup.from_options(args),
                               args.reset_every, args.valid_chars, _progress_bar(), args.log, args.log_valid,
                               args.valid_burn_in)
    print(f"{args.task}, cell {args.cell}, hidden {args.hidden}, batch {args.batch}, {args.steps} steps, "
          f"seed {args.seed}")
    _print_rows(rows, _COLUMNS[args.task])
    _plot(args.plot, plotting.curves, _curves(rows), _charlm_ylabel(args) if args.task == "charlm" else "T_cur")
    return 0


# ---------------------------------------------------------------- kfrtrl noise


def _add_noise(sub):
    p = sub.add_parser("noise", help="gradient noise and bias of estimators against exact RTRL, against n",
                       description="On one fixed trajectory, run --chains independent chains of each estimator "
                                   "against exact RTRL and print the relative variance of the gradient and of G "
                                   "and the bias statistic z (about 1 when unbiased).")
    p.add_argument("--sizes", type=size_list, default=[8, 16, 32, 64], metavar="N,N,...",
                   help="hidden sizes (default: 8,16,32,64)")
    p.add_argument("--estimators", type=train_specs, default=list(estimators.NOISE_DEFAULT), metavar="E,E,...",
                   help=f"estimators (default: {','.join(estimators.NOISE_DEFAULT)})")
    p.add_argument("--chains", type=chain_count, default=100, metavar="N", help="independent chains (default: 100)")
    p.add_argument("--steps", type=positive_int, default=60, metavar="S", help="trajectory length (default: 60)")
    p.add_argument("--burn-in", type=int, default=20, metavar="T", help="first measured step - 1 (default: 20)")
    p.add_argument("--every", type=positive_int, default=2, metavar="K", help="measure every K steps (default: 2)")
    p.add_argument("--probes", type=positive_int, default=2, metavar="P",
                   help="Gaussian probes per measurement for the variance of G (default: 2)")
    p.add_argument("--rank", type=positive_int, default=None, metavar="R",
                   help="rank of an estimator taking one, when no :k is given (default: 1)")
    p.add_argument("--seed", type=seed_int, default=0, metavar="S", help="seed of the cell and trajectory")
    add_cell_args(p)
    p.add_argument("--over-time", type=positive_int, default=None, metavar="W",
                   help="also print the relative variances pooled over W consecutive windows of the measured "
                        "steps (does the variance grow with t?); --plot then draws them against t")
    add_backend_arg(p)
    add_plot_arg(p, "the relative gradient variance against n (log-log), or against t with --over-time")
    p.set_defaults(func=_cmd_noise)


def _cmd_noise(args):
    if _missing_matplotlib(args):
        return 2
    if args.burn_in < 0 or args.burn_in + args.every > args.steps:
        print(f"kfrtrl noise: error: expected 0 <= --burn-in and --burn-in + --every <= --steps, got "
              f"{args.burn_in} + {args.every} > {args.steps}", file=sys.stderr)
        return 2
    n_measured = (args.steps - args.burn_in) // args.every
    if args.over_time is not None and args.over_time > n_measured:
        print(f"kfrtrl noise: error: expected --over-time <= the {n_measured} measured steps, got {args.over_time}",
              file=sys.stderr)
        return 2
    model = None
    if (args.cell, args.depth, args.dtype, args.init_std) != ("elman", None, "float64", None):
        model = experiments.Setup.from_options(args)
    result = experiments.noise(args.estimators, args.sizes, args.chains, args.steps, args.burn_in, args.every,
                               args.probes, args.rank, args.seed, args.backend, args.over_time, _progress_bar(),
                               model)
    print(f"gradient noise: {args.chains} chains, steps {args.burn_in + args.every}..{args.steps} "
          f"every {args.every}, seed {args.seed}")
    _print_rows(result["rows"], ["estimator", "n", "rel var grad", "rel var G", "z", "bias", "bias floor", "cos",
                                 "seconds"])
    if args.over_time is None:
        _plot(args.plot, plotting.curves, result["curves"], "relative gradient variance", xlabel="hidden units n",
              scale="loglog")
        return 0
    print(f"\nover time: {args.over_time} windows")
    _print_rows(result["over_time"], ["estimator", "n", "steps", "rel var grad", "rel var G"])
    _plot(args.plot, plotting.curves, result["curves"], "relative gradient variance",
          xlabel="step t (end of window)", scale="logy")
    return 0


# ---------------------------------------------------------------- main

def _add_series(sub):
    from ._series_cli import add_series  # imported here: it builds on this module's flag helpers

    add_series(sub)


#: subcommand registrars, in the order ``kfrtrl --help`` lists them
COMMANDS = [_add_info, _add_bench, _add_copy, _add_charlm, _add_noise, _add_compare, _add_series, add_sweep]


def build_parser():
    """The ``kfrtrl`` parser with every registered subcommand."""
    parser = _Parser(prog="kfrtrl", description="Online training of recurrent networks with the RTRL family.")
    parser.add_argument("--version", action="version", version=f"kfrtrl {kfrtrl.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv=None):
    """Run ``kfrtrl`` with ``argv``.

    Bad input (ValueError, OSError) prints one line and returns 2; a reader that closes
    the pipe early (``kfrtrl info | head -4``) ends the command quietly with 141, as
    SIGPIPE ends other programs.

    Parameters
    ----------
    argv : list of str or None
        The arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        unused = unused_options(args)
        if unused:
            print(f"kfrtrl {args.command}: error: {'; '.join(unused)}", file=sys.stderr)
            return 2
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())    # no second error at exit
        return 141
    except (ValueError, OSError) as exc:
        print(f"kfrtrl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kfrtrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
