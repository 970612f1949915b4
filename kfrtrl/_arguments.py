"""The ``kfrtrl`` command's argument types and the flags several commands share.

An argument type turns the text into a value or raises ``argparse.ArgumentTypeError``
(printed as one line, exit code 2); ``add_*`` functions add a flag so it reads the same
in every command. :func:`add_model_args` holds the flags of
:class:`kfrtrl.experiments.Setup` (same names).
"""
import argparse
import os

from . import estimators, scaling, tasks, train
from .backends import available_backends, known_backends


def positive_int(text, minimum=1, why=""):
    """argparse type: an integer >= ``minimum`` (1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{why}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{why}, got {value}")
    return value


def nonnegative_int(text):
    """argparse type: an integer >= 0."""
    return positive_int(text, 0)


def seed_int(text):
    """argparse type: a seed, an integer >= 0 (numpy's generators take no negative seed)."""
    return nonnegative_int(text)


def chain_count(text):
    """argparse type: an integer >= 2 (a variance needs two chains)."""
    return positive_int(text, 2, " (a variance needs two chains)")


def backend_name(text):
    """argparse type: a backend that imports here, or "auto"."""
    if text not in known_backends():
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; expected one of {known_backends()}")
    if text != "auto" and text not in available_backends():
        raise argparse.ArgumentTypeError(
            f"backend {text!r} is not available here; available: {available_backends() + ['auto']}"
        )
    return text


def writable_path(text):
    """argparse type: a file path that can be written (checked now, not after a long run)."""
    existed = os.path.exists(text)
    try:
        with open(text, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {exc.strerror}") from None
    if not existed:
        os.remove(text)
    return text


def readable_path(text):
    """argparse type: an existing readable file."""
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: no such readable file")
    return text


def add_backend_arg(parser):
    """--backend NAME (default "auto")."""
    parser.add_argument("--backend", type=backend_name, default="auto", metavar="NAME",
                        help=f"kernel backend, one of {known_backends()} (default: auto)")


def add_threads_arg(parser, default=None):
    """--threads N (default: ``default``, None meaning all cores)."""
    parser.add_argument("--threads", type=positive_int, default=default, metavar="N",
                        help=f"threads for kernels and BLAS (default: {default or 'all cores'})")


def add_json_arg(parser, what):
    """--json PATH: write ``what`` as JSON."""
    parser.add_argument("--json", type=writable_path, default=None, metavar="PATH", help=f"write {what} as JSON to PATH")


def add_plot_arg(parser, what):
    """--plot PATH: write ``what`` as a PNG (needs matplotlib)."""
    parser.add_argument("--plot", type=writable_path, default=None, metavar="PATH",
                        help=f"write {what} as a PNG to PATH (needs matplotlib)")


def train_spec(text):
    """argparse type: an estimator of :func:`kfrtrl.train.make_estimator` (``name`` or ``name:k``)."""
    try:
        train.parse_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def train_specs(text):
    """argparse type: a comma-separated list of estimator specs."""
    return [train_spec(item) for item in text.split(",")]


def cell_spec(text):
    """argparse type: one cell (:func:`kfrtrl.scaling.parse_cell`), as its label."""
    try:
        return scaling.canonical_cell(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cell_specs(text):
    """argparse type: a comma-separated list of benchmark cells (:func:`kfrtrl.scaling.parse_cell`), as labels."""
    try:
        return [scaling.canonical_cell(item) for item in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size_list(text):
    """argparse type: a comma-separated list of integers >= 1."""
    return [positive_int(item) for item in text.split(",")]


def positive_float(text):
    """argparse type: a real number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def text_corpus(text):
    """argparse type: a UTF-8 text file, loaded as a :class:`kfrtrl.tasks.Corpus` (90 % train, 10 % validation)."""
    try:
        return tasks.load_corpus(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def nonnegative_float(text):
    """argparse type: a finite real number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def add_training_args(parser, steps, lr):
    """The flags every single-estimator training command shares (estimator, model, checkpoints)."""
    parser.add_argument("--estimator", type=train_spec, default=estimators.TRAIN_DEFAULT, metavar="NAME",
                        help=f"one of {estimators.describe_specs()} (default: {estimators.TRAIN_DEFAULT})")
    add_model_args(parser, steps, lr)
    add_run_args(parser)
    parser.add_argument("--save", type=writable_path, default=None, metavar="PATH",
                        help="write a checkpoint at the end (and every --save-every steps), atomically")
    parser.add_argument("--save-every", type=positive_int, default=None, metavar="K",
                        help="also write the --save checkpoint every K steps (a killed run resumes from it)")
    parser.add_argument("--resume", type=readable_path, default=None, metavar="PATH",
                        help="continue from a checkpoint of the same configuration up to step --steps "
                             "(with --log, the log's rows after the checkpoint are dropped and the curve goes on)")


def add_model_args(parser, steps, lr, batch=16):
    """The flags of :class:`kfrtrl.experiments.Setup` (same names)."""
    parser.add_argument("--rank", type=positive_int, default=None, metavar="R",
                        help="rank of an estimator taking one, when NAME has no :k (default: 1)")
    parser.add_argument("--hidden", type=positive_int, default=32, metavar="N", help="hidden units (default: 32)")
    _add_cell_arg(parser)
    parser.add_argument("--batch", type=positive_int, default=batch, metavar="B",
                        help=f"parallel streams (default: {batch})")
    parser.add_argument("--steps", type=positive_int, default=steps, metavar="S", help=f"online steps (default: {steps})")
    parser.add_argument("--lr", type=positive_float, default=lr, metavar="LR", help=f"Adam learning rate (default: {lr})")
    parser.add_argument("--clip", type=positive_float, default=1.0, metavar="C", help="gradient-norm clip (default: 1)")
    parser.add_argument("--update-every", type=positive_int, default=1, metavar="K",
                        help="apply the mean gradient every K steps (default: 1)")
    parser.add_argument("--seed", type=seed_int, default=0, metavar="S", help="seed of cell, readout, estimator and data")
    add_backend_arg(parser)
    add_threads_arg(parser)


def _add_cell_arg(parser):
    parser.add_argument("--cell", type=cell_spec, default="elman", metavar="C",
                        help=f"the recurrent cell, {', '.join(scaling.CELLS)} or rhnL (default: elman)")


def add_cell_args(parser):
    """--cell, --depth, --dtype and --init-std: the model of a command without :func:`add_model_args`."""
    _add_cell_arg(parser)
    _add_cell_options(parser)


def _add_cell_options(parser):
    parser.add_argument("--depth", type=positive_int, default=None, metavar="L",
                        help="micro-layers of --cell rhn (the same as --cell rhnL; default: 1)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="(default: float64)")
    parser.add_argument("--init-std", type=nonnegative_float, default=None, metavar="S",
                        help="draw every weight (readout and biases included) from N(0, S^2), as the OK authors "
                             "with S = 0.01 (default: the cells' own initialisation)")


def add_run_args(parser):
    """--depth, --dtype, --init-std, --faithful and --log: the papers' configuration of a training command."""
    _add_cell_options(parser)
    parser.add_argument("--faithful", action="store_true",
                        help="the OK authors' code: RHN candidate 2σ(z)-1, only the cell's gradient clipped, "
                             "copy curriculum's running loss from 1 bit, T_cur compared when a sequence ends")
    parser.add_argument("--log", type=writable_path, default=None, metavar="PATH",
                        help="curve log, one row per 1%% of --steps: step, T_cur or training BPC, seconds "
                             "(CSV, or JSON lines if PATH ends in .jsonl/.json; compare: one per estimator)")


def add_charlm_args(parser):
    parser.add_argument("--reset-every", type=positive_int, default=None, metavar="K",
                        help="zero the state every K characters (training and validation; default: never)")
    parser.add_argument("--valid-chars", type=positive_int, default=None, metavar="C",
                        help="evaluate on the first C validation characters only (default: all)")
    parser.add_argument("--valid-burn-in", type=nonnegative_int, default=0, metavar="K",
                        help="run each validation chunk's state over the K characters before it first, "
                             "uncounted (the first chunk: the end of the training text; default: 0, from a "
                             "zero state)")
    parser.add_argument("--log-valid", action="store_true",
                        help="also evaluate the validation BPC (on --valid-chars) at each of the 100 log points: "
                             "a valid_bpc column in --log, and the plotted curve")


def unused_options(args):
    """Messages for options given that the chosen estimators, task or cell do not use, or that lack the
    option they need (then --rank defaults to 1)."""
    unused = []
    specs = getattr(args, "estimator", None) or getattr(args, "estimators", None) or []
    specs = [specs] if isinstance(specs, str) else list(specs)
    if getattr(args, "rank", None) is not None:
        parsed = [estimators.parse_spec(spec) for spec in specs]
        if not any(k is None and estimators.param_default(name)[0] == "rank" for name, k in parsed):
            unused.append(f"--rank applies to an estimator taking a rank without ':k', got {','.join(specs)}")
    if getattr(args, "task", None) == "copy":
        for flag in ("file", "reset_every", "valid_chars", "log_valid", "valid_burn_in"):
            if getattr(args, flag, None) not in (None, False, 0):
                unused.append(f"--{flag.replace('_', '-')} applies to --task charlm, got --task copy")
    if getattr(args, "depth", None) is not None and args.cell != "rhn":
        unused.append(f"--depth: only --cell rhn takes it (rhnL gives the depth too), got --cell {args.cell}")
    if getattr(args, "workload", None):
        for flag in ("quick", "sizes", "estimators", "cells", "batch", "plot", "source"):
            if getattr(args, flag, None):
                name = "--from" if flag == "source" else f"--{flag}"
                unused.append(f"{name} applies to the scaling grid, not to --workload {args.workload}")
    if getattr(args, "save_every", None) and not args.save:
        unused.append("--save-every: needs --save PATH (the checkpoint it rewrites)")
    if hasattr(args, "rank") and args.rank is None:
        args.rank = 1
    return unused
