"""CPU time per online step of exact element-wise RTRL against n, beside KF-RTRL, OK and dense RTRL.

Times one step (``step`` then ``gradient``) of :class:`kfrtrl.scaling.Workload`
on one thread with ``time.process_time`` (CPU seconds of this process), the
minimum over repeats: on a shared machine wall-clock medians mostly measure
the other jobs, while a one-thread process's CPU time does not count the time
it waits for a core. Fits log-log exponents over all sizes and over the
upper half::

    python bench/elementwise_scaling.py [--sizes 256,512,1024,2048] [--batch 1] [--cells elstm,lru,elman]
        [--json out.json]
"""
import argparse
import json
import time

import numpy as np

from kfrtrl import scaling
from kfrtrl.threads import limit

#: (cell, estimator, largest n): the dense methods stop where one step costs seconds
RUNS = (("elstm", "rtrl", 4096), ("lru", "rtrl", 4096), ("elman", "kf", 2048), ("elman", "ok-8", 1024),
        ("elman", "rtrl", 256))


def cpu_per_step(cell, spec, n, batch, repeats):
    """Minimum over ``repeats`` of the CPU seconds per step (each repeat ≥ 0.05 CPU s)."""
    with limit(1):
        work = scaling.Workload(spec, n, batch_size=batch, n_threads=1, cell=cell)
        work.warm_up()
        start = time.process_time()
        work.step()
        k = max(1, int(0.05 / max(time.process_time() - start, 1e-6)))
        best = np.inf
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(k):
                work.step()
            best = min(best, (time.process_time() - start) / k)
    return best, work.est.backend


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,512,1024,2048")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cells", default="elstm,lru,elman", help="measure these cells only")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [run for run in RUNS if run[0] in args.cells.split(",")]
    rows = []
    for cell, spec, largest in runs:
        for n in [s for s in sizes if s <= largest]:
            t, backend = cpu_per_step(cell, spec, n, args.batch, args.repeats)
            rows.append({"cell": cell, "estimator": spec, "n": n, "batch": args.batch, "cpu_seconds": t,
                         "backend": backend})
            print(f"{cell:6} {spec:5} n={n:5} {t * 1e3:10.3f} ms ({backend})", flush=True)
    print("\n| cell | estimator | " + " | ".join(f"n={n}" for n in sizes) + " | exponent (all) | exponent (upper half) |")
    print("|---|---|" + "---|" * (len(sizes) + 2))
    for cell, spec, _ in runs:
        mine = [r for r in rows if (r["cell"], r["estimator"]) == (cell, spec)]
        ns, ts = [r["n"] for r in mine], [r["cpu_seconds"] for r in mine]
        cells = [f"{ts[ns.index(n)] * 1e3:.3g} ms" if n in ns else "–" for n in sizes]
        half = scaling.upper_half(ns)
        fit_all = scaling.fit_exponent(ns, ts) if len(ns) > 1 else float("nan")
        fit_half = scaling.fit_exponent(half, [ts[ns.index(n)] for n in half]) if len(ns) > 1 else float("nan")
        print(f"| {cell} | {spec} | " + " | ".join(cells) + f" | {fit_all:.2f} | {fit_half:.2f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
