"""Every plot kfrtrl draws, in one place (needs matplotlib: ``pip install 'kfrtrl[plot]'``).

:func:`curves` draws labelled lines (training curves, noise against n or t);
:func:`copy_band` copy-task curves beside the OK authors' published band;
:func:`series` the prequential MSE of series runs against the Kalman-optimal
one; :func:`scaling` the benchmark's time per step against n with the fitted
lines; :func:`sweep` a sweep's results by estimator. Each writes a PNG and
imports matplotlib only when called.
"""
import math

import numpy as np

from .checkpoint import atomic_write


def available():
    """Whether matplotlib imports here."""
    try:
        import matplotlib  # noqa: F401  (only to know whether plotting is possible)
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(path, lines, ylabel, xlabel="step", scale="linear"):
    """Write labelled lines to the PNG ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    lines : dict of str to (x, y), sequences of numbers of one length
    ylabel, xlabel : str
    scale : {"linear", "logy", "loglog"}
        Log y axis, or log2 x and log y axes with markers.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, marker="o" if scale != "linear" else None, label=label)
    if scale == "loglog":
        ax.set_xscale("log", base=2)
    if scale != "linear":
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never hides a curve
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def copy_band(path, lines, title=None):
    """Write T_cur against steps for {label: (steps, T_cur)} beside the OK authors' band to the PNG ``path``.

    The band is the range over the authors' five logged runs (:data:`kfrtrl.papers.OK_COPY_T_CUR`)
    at their logged steps (bars; shaded between them), nothing before their first logged step.
    Written atomically.

    Parameters
    ----------
    path : str or os.PathLike
    lines : dict of str to (steps, T_cur)
    title : str or None
    """
    from .papers import OK_COPY_T_CUR

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max([max(x) for x, _ in lines.values()] + [10_000])
    ref = [(s, lo, hi) for s, (lo, hi) in OK_COPY_T_CUR.items() if s <= 2 * top]
    xs, lows, highs = (np.array(v, dtype=float) for v in zip(*ref))
    ax.fill_between(xs, lows, highs, color="0.85")
    ax.errorbar(xs, (lows + highs) / 2, yerr=(highs - lows) / 2 + 0.05, fmt="none", ecolor="k", capsize=4,
                label="OK paper: RHN n=128, OK(16), 5 runs (range)")
    for label, (x, y) in lines.items():
        ax.step(x, y, where="post", label=label)
    ax.set_xlim(0, top * 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("T_cur")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))   # a kept figure is never half-written
    plt.close(fig)


def series(path, lines, optimal=None):
    """Write the prequential MSE curves of :func:`kfrtrl.experiments.series` (log scale) as a PNG, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    lines : dict of str to (steps, MSE)
    optimal : float or None, the Kalman-optimal MSE drawn as a dashed line
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, label=label)
    if optimal is not None:
        ax.axhline(optimal, color="k", linestyle="--", label="Kalman-optimal")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("prequential MSE (window mean)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


def scaling(path, records):
    """Write a log-log PNG of time per step against n with the fitted lines.

    Parameters
    ----------
    path : str or os.PathLike
    records : list of dict, records of :mod:`kfrtrl.scaling` (one panel per cell, dtype and batch)
    """
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from .scaling import by_fields, exponent_text, fits

    plt = _pyplot()
    groups = by_fields(records, ("cell", "dtype", "batch"))
    fitted = fits(records)
    cols = min(2, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 5 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, ((cell, dtype, batch), recs) in zip(axes.flat, groups.items()):
        for (label,), points in by_fields(recs, ("estimator",)).items():
            f = fitted[(cell, dtype, batch, label)]
            dots = ax.loglog([r["n"] for r in points], [r["time"] for r in points], "o",
                             label=f"{label}  $n^{{{exponent_text(f['time_exp'])}}}$")
            if not math.isnan(f["time_exp"]):
                ns = np.array(f["sizes"], dtype=float)
                ax.loglog(ns, f["coef"] * ns ** f["time_exp"], "-", color=dots[0].get_color())
        ax.set(xlabel="n (hidden units)", ylabel="seconds per step (step + gradient)",
               title=f"{cell}, {dtype}, batch {batch}: lines fitted on the upper half of the sizes")
        ax.set_xticks(sorted({r["n"] for r in recs}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(path, records):
    """Write a sweep's metric per estimator (records of :func:`kfrtrl.sweep.run`) as a PNG.

    Every run is a dot and each group's mean a line: against the one numeric option that varies
    (e.g. ``hidden``) when there is one, else one column per estimator with the mean as a bar.

    Parameters
    ----------
    path : str or os.PathLike
    records : list of dict, records of :func:`kfrtrl.sweep.run`
    """
    from .sweep import summarize, varying_options

    plt = _pyplot()
    groups = summarize(records)
    varying = varying_options(groups)
    numeric = len(varying) == 1 and all(isinstance(g["options"].get(varying[0]), (int, float)) for g in groups)
    estimators = list(dict.fromkeys(g["estimator"] for g in groups))
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, est in enumerate(estimators):
        mine = [r for r in records if r["config"]["estimator"] == est]
        ys = [r["result"][r["metric"]] for r in mine]
        if numeric:
            means = sorted((g["options"][varying[0]], g["mean"]) for g in groups if g["estimator"] == est)
            line, = ax.plot(*zip(*means), marker="o", label=est)
            ax.scatter([r["config"][varying[0]] for r in mine], ys, s=12, color=line.get_color(), alpha=0.5)
        else:
            ax.bar(i, sum(ys) / len(ys), color=f"C{i}", alpha=0.4, label=est)
            ax.scatter([i] * len(ys), ys, s=12, color=f"C{i}")
    if numeric:
        ax.set_xlabel(varying[0])
    else:
        ax.set_xticks(range(len(estimators)), estimators)
    ax.set_ylabel(groups[0]["metric"])
    ax.set_title(f"{records[0]['config']['task']}: {len(records)} runs")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
