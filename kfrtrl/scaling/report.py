"""Reporting: the benchmark JSON, the fitted exponents and the text table (plots: :mod:`kfrtrl.plotting`).

- :func:`to_json` / :func:`load_records` write and read a pytest-benchmark
  shaped JSON (``kfrtrl bench --json``, or bench/test_scaling.py's own);
- :func:`fit_exponent` fits the log-log slope of time against n on the upper
  half of the sizes (:func:`fits` per group);
- :func:`format_table` prints time, ratio to the exact estimator, ratio to the
  GEMM lower bound, memory and the fitted exponents.

A record is a dict: estimator, cell, n, batch, dtype, backend, n_threads,
state/peak bytes per sample, gemm_layers, gemm_flops, gemm_median and
``time`` (median seconds per step), ``min``, ``max``, ``rounds``.
"""
import json
import math
from collections import defaultdict

import numpy as np

from .. import estimators

#: marks this suite's entries in a benchmark JSON (other suites may share the file)
SUITE = "kfrtrl-scaling"



def to_json(records, skipped=()):
    """The records as a pytest-benchmark-shaped dict (readable by :func:`load_records`).

    Parameters
    ----------
    records : list of dict, see :func:`kfrtrl.scaling.measure.measure`
    skipped : sequence of tuple, the skipped points of :func:`kfrtrl.scaling.measure.run`

    Returns
    -------
    dict of JSON values
    """
    benches = []
    for rec in records:
        extra = {k: v for k, v in rec.items() if k not in ("time", "min", "max", "rounds")}
        benches.append({
            "group": f"scaling {rec['cell']} {rec['dtype']} batch={rec['batch']} n={rec['n']}",
            "name": f"{rec['estimator']}[{rec['cell']},n={rec['n']},batch={rec['batch']},{rec['dtype']}]",
            "stats": {"median": rec["time"], "min": rec["min"], "max": rec["max"], "rounds": rec["rounds"]},
            "extra_info": extra,
        })
    return {"benchmarks": benches, "skipped": [list(s) for s in skipped]}


def load_records(path):
    """Read the scaling entries of a pytest-benchmark JSON file -> list of records.

    A record is the entry's extra_info (estimator, cell, n, batch, dtype, backend,
    state/peak bytes per sample, gemm_median, ...) plus ``time``, the median
    seconds per step; files from before the cell was recorded are elman's.
    Entries of other suites are ignored.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        If the file is not such a JSON or holds no scaling entry.
    """
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: expected a pytest-benchmark JSON file, got invalid JSON ({exc})") from exc
    benches = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benches, list):
        raise ValueError(f"{path}: expected a pytest-benchmark JSON with a 'benchmarks' list")
    records = [
        dict({"cell": "elman"}, **b["extra_info"], **{k: b["stats"].get(k) for k in ("min", "max", "rounds")},
             time=b["stats"]["median"])
        for b in benches
        if isinstance(b, dict) and b.get("extra_info", {}).get("suite") == SUITE
    ]
    if not records:
        raise ValueError(f"{path}: no {SUITE} entries (run bench/test_scaling.py or kfrtrl bench)")
    return records


# ---------------------------------------------------------------- fits and table


def fit_exponent(ns, values):
    """Least-squares slope of log(values) against log(ns).

    Parameters
    ----------
    ns, values : sequences of float, same length

    Returns
    -------
    float
        nan with fewer than 2 distinct sizes or a value <= 0 or nan.
    """
    ns, values = np.asarray(ns, dtype=float), np.asarray(values, dtype=float)
    if len(np.unique(ns)) < 2 or not (values > 0).all():
        return math.nan
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def upper_half(ns):
    """The sizes the exponent is fitted on: those above the median size (the largest ⌊k/2⌋ of k), at least two.

    Parameters
    ----------
    ns : iterable of int

    Returns
    -------
    list of int, sorted
    """
    ns = sorted(set(ns))
    return ns[-max(2, len(ns) // 2):]


def fits(records):
    """Per (cell, dtype, batch, estimator): {"sizes", "time_exp", "gemm_exp", "mem_exp", "coef"} on the upper-half sizes.

    ``gemm_exp`` is the exponent of the step's GEMM lower bound itself (nan
    if not recorded): on small sizes BLAS speeds up with n, so it is often
    below the flop count's exponent, and the estimator's is read against it.

    ``coef`` is c of the fitted line t = c · n^time_exp (for plotting).

    Parameters
    ----------
    records : list of dict

    Returns
    -------
    dict
    """
    out = {}
    for key, recs in by_fields(records, ("cell", "dtype", "batch", "estimator")).items():
        sizes = upper_half(r["n"] for r in recs)
        top = [r for r in recs if r["n"] in sizes]
        ns = [r["n"] for r in top]
        t_exp = fit_exponent(ns, [r["time"] for r in top])
        coef = math.nan if math.isnan(t_exp) else float(np.exp(np.mean(np.log([r["time"] for r in top]) - t_exp * np.log(ns))))
        out[key] = {
            "sizes": sizes,
            "time_exp": t_exp,
            "gemm_exp": fit_exponent(ns, [r.get("gemm_median") or math.nan for r in top]),
            "mem_exp": fit_exponent(ns, [r["state_bytes_per_sample"] for r in top]),
            "coef": coef,
        }
    return out


def by_fields(records, fields):
    """Group records by the values of some fields.

    Parameters
    ----------
    records : list of dict
    fields : sequence of str

    Returns
    -------
    dict
        ``{(values of fields): records sorted by n}``, groups in the tables' order.
    """
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r[f] for f in fields)].append(r)
    return {k: sorted(v, key=lambda r: r["n"]) for k, v in sorted(groups.items(), key=lambda kv: _order(kv[0]))}


def _order(key):
    """Sort key of a group: estimators in the default order (others after), numbers and names naturally."""
    return tuple(
        (0, estimators.BENCH_DEFAULT.index(k), "") if k in estimators.BENCH_DEFAULT
        else (1, k, "") if isinstance(k, int) else (2, 0, str(k))
        for k in key
    )


def format_time(seconds):
    """Seconds as text: "73.1 µs", "8.1 ms", "1.23 s".

    Parameters
    ----------
    seconds : float >= 0

    Returns
    -------
    str
    """
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(nbytes):
    """Bytes as text: "512 B", "139 KiB", "1.07 GiB".

    Parameters
    ----------
    nbytes : float >= 0

    Returns
    -------
    str
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def _ratio(num, den):
    return "—" if den is None or not den > 0 else f"{num / den:.3g}"


def exponent_text(x):
    """A fitted exponent as text, "—" when there is none.

    Parameters
    ----------
    x : float, or nan

    Returns
    -------
    str
    """
    return "—" if math.isnan(x) else f"{x:.2f}"


def format_table(records, skipped=()):
    """The scaling report as text: per (cell, dtype, batch) a row per estimator and size, then the fits.

    Parameters
    ----------
    records : list of dict
    skipped : sequence of tuple, listed at the end

    Returns
    -------
    str
    """
    fitted = fits(records)
    lines = []
    head = f"{'estimator':<13}{'n':>5}  {'time/step':>10}  {'×RTRL':>7}  {'×GEMM':>7}  {'state/sample':>12}  {'peak/sample':>12}"
    for (cell, dtype, batch), recs in by_fields(records, ("cell", "dtype", "batch")).items():
        exact = {r["n"]: r["time"] for r in recs if r["estimator"] == estimators.EXACT}
        threads = ",".join(sorted({str(r.get("n_threads") or "all cores") for r in recs}))
        lines += [f"== {cell}, {dtype}, batch {batch}, threads {threads}: median time of one step (step + gradient) ==",
                  head]
        for (label,), rows in by_fields(recs, ("estimator",)).items():
            for r in rows:
                lines.append(
                    f"{label:<13}{r['n']:>5}  {format_time(r['time']):>10}  {_ratio(r['time'], exact.get(r['n'])):>7}  "
                    f"{_ratio(r['time'], r.get('gemm_median')):>7}  {format_bytes(r['state_bytes_per_sample']):>12}  "
                    f"{format_bytes(r['peak_bytes_per_sample']):>12}"
                )
        lines += ["", f"{'estimator':<13}{'backend':<9}{'time exponent':>14}{'GEMM exponent':>15}"
                      f"{'memory exponent':>17}  fitted on n ="]
        for (label,), rows in by_fields(recs, ("estimator",)).items():
            f = fitted[(cell, dtype, batch, label)]
            backends = ",".join(sorted({r["backend"] for r in rows}))
            exps = [exponent_text(f[k]) for k in ("time_exp", "gemm_exp", "mem_exp")]
            lines.append(f"{label:<13}{backends:<9}{exps[0]:>14}{exps[1]:>15}{exps[2]:>17}  "
                         + " ".join(map(str, f["sizes"])))
        lines.append("")
    lines += [f"skipped {cell} {label} n={n} batch={batch} {dtype}: {why}"
              for cell, label, n, batch, dtype, why in skipped]
    return "\n".join(lines).rstrip() + "\n"
