"""Long-run stability: every registered estimator × every cell, trained online in float32 on the copy task.

Opt-in and slow (not in testpaths)::

    KFRTRL_LONG_LOG=long_run.jsonl python -m pytest bench/test_long_run.py -s

``KFRTRL_LONG_STEPS`` (default 100000) steps of batch 4 at n = 16 (``KFRTRL_LONG_N``),
one thread, Adam lr 1e-3 clipped to 1, on the copy task with its curriculum: every new
string resets its sample (``reset(mask)`` thousands of times). Each run must stay finite
and keep every entry of the estimator's influence factors (the float arrays of its
saved state; TBPTT keeps none and reads 0) below ``FACTOR_BOUND`` (the KF/OK norm
balancing and UORO's ρ's exist to keep them so).

The estimators come from the registry, each with the ``:k`` of :data:`K` where its
parameter is listed there (two chains, rank 2, truncation 8) and its default otherwise.
A pair the estimator refuses by design (its constructor raises TypeError naming the
cell, e.g. RFLO off the Elman-type cells) is skipped with that message.

Every finished pair appends one JSON line (spec, cell, n, steps, resets, largest factor
and weight entries, T_cur, last 1000 steps' loss in bits, seconds, backend) to
``KFRTRL_LONG_LOG`` (default ``long_run.jsonl``), flushed and fsynced; a restarted run
skips the pairs already in the log with the same n and steps, so a killed run loses only
the pair it was in. ``python bench/test_long_run.py LOG`` prints the log as a markdown table.
"""
import json
import os
import time
from collections import deque

import numpy as np
import pytest

import kfrtrl
from kfrtrl import tasks, train
from kfrtrl.estimators import _registry

STEPS = int(os.environ.get("KFRTRL_LONG_STEPS", "100000"))
N = int(os.environ.get("KFRTRL_LONG_N", "16"))
LOG = os.environ.get("KFRTRL_LONG_LOG", "long_run.jsonl")
FACTOR_BOUND = 1e4
#: parameter -> k of the spec (estimators whose parameter is not listed take their default)
K = {"n_chains": 2, "rank": 2, "truncation": 8}
SPECS = [name if _registry.param_default(name)[0] not in K else f"{name}:{K[_registry.param_default(name)[0]]}"
         for name in _registry.names()]
CELLS = {
    "elman": lambda n, **kw: kfrtrl.Elman(4, n, **kw),
    "elman-sigmoid": lambda n, **kw: kfrtrl.Elman(4, n, alpha=0.5, activation="sigmoid", **kw),
    "rhn": lambda n, **kw: kfrtrl.RHN(4, n, **kw),
    "lstm": lambda n, **kw: kfrtrl.LSTM(4, n, **kw),
    "gru": lambda n, **kw: kfrtrl.GRU(4, n, **kw),
    "elstm": lambda n, **kw: kfrtrl.ELSTM(4, n, **kw),
    "lru": lambda n, **kw: kfrtrl.LRU(4, n, **kw),
}


def _largest_entry(value):
    """Largest |entry| of the float arrays inside ``value`` (nested dicts, lists, tuples, deques); 0 if none."""
    if isinstance(value, np.ndarray):
        return float(np.abs(value).max()) if value.dtype.kind == "f" and value.size else 0.0
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple, deque)):
        return max((_largest_entry(v) for v in value), default=0.0)
    return 0.0


def _largest_factor(est):
    """Largest |entry| of the float arrays among the attributes the estimator's state_dict saves."""
    return max((_largest_entry(getattr(est, attr)) for attr in est._state_attrs), default=0.0)


def _done(spec, cell_name):
    """The log's row of this pair at this n and step count, or None."""
    if not os.path.exists(LOG):
        return None
    with open(LOG, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:          # a line cut by a kill
                continue
            if (row["spec"], row["cell"], row["n"], row["steps"]) == (spec, cell_name, N, STEPS):
                return row
    return None


def _append(row):
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_pair(spec, cell_name, steps=STEPS, n=N):
    """Train ``spec`` on cell ``cell_name`` (float32, n units) for ``steps`` copy-task steps; the row as a dict."""
    cell = CELLS[cell_name](n, dtype=np.float32, rng=1)
    est = train.make_estimator(spec, cell, batch_size=4, rng=2, n_threads=1)
    trainer = train.Trainer(est, 4, lr=1e-3, clip=1.0, rng=3)
    task = tasks.CopyTask(4, rng=4, dtype=np.float32)
    largest = {"factor": 0.0, "weight": 0.0}
    resets = 0
    losses = np.empty(steps)
    start = time.perf_counter()
    for step in range(steps):
        x, y, reset = task.next()
        resets += int(reset.sum())
        loss = trainer.step(x, y, reset)
        task.observe(loss)
        losses[step] = np.mean(loss)
        if step % 97 == 0 or step == steps - 1:     # sampled: a full scan every step would double the cost
            largest["factor"] = max(largest["factor"], _largest_factor(est))
            largest["weight"] = max(largest["weight"], max(float(np.abs(W).max()) for W in cell.params().values()))
    finite = (all(np.isfinite(W).all() for W in cell.params().values())
              and bool(np.isfinite(trainer.readout.W).all()) and bool(np.isfinite(est.state).all()))
    return {"spec": spec, "cell": cell_name, "n": n, "steps": steps, "resets": resets,
            "max_factor": largest["factor"], "max_weight": largest["weight"], "T_cur": task.T_cur,
            "loss_last_1000": float(np.mean(losses[-1000:])), "seconds": round(time.perf_counter() - start, 1),
            "backend": est.backend, "finite": finite}


@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("spec", SPECS)
def test_long_run_stays_finite_with_bounded_factors(spec, cell_name):
    try:
        train.make_estimator(spec, CELLS[cell_name](N, dtype=np.float32, rng=1), batch_size=4)
    except TypeError as exc:
        pytest.skip(f"invalid by design: {exc}")
    row = _done(spec, cell_name)
    if row is None:
        row = run_pair(spec, cell_name)
        _append(row)
    print(f"\n[long run] {json.dumps(row)}", end="")
    assert row["finite"]
    assert row["max_factor"] < FACTOR_BOUND


def table(rows):
    """The markdown table of the logged rows, in registry × cell order."""
    order = {(spec, cell): i for i, (spec, cell) in enumerate((s, c) for s in SPECS for c in CELLS)}
    lines = ["| estimator | cell | n | steps | resets | max abs factor entry | max abs weight | T_cur | "
             "loss last 1000 (bits) | finite | seconds | backend |", "|" + "---|" * 12]
    for r in sorted(rows, key=lambda r: order.get((r["spec"], r["cell"]), len(order))):
        lines.append(f"| {r['spec']} | {r['cell']} | {r['n']} | {r['steps']} | {r['resets']} | {r['max_factor']:.3g} | "
                     f"{r['max_weight']:.3g} | {r['T_cur']} | {r['loss_last_1000']:.3f} | {'yes' if r['finite'] else 'NO'} | "
                     f"{r['seconds']:.0f} | "
                     f"{r['backend'] or 'auto'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    with open(sys.argv[1] if len(sys.argv) > 1 else LOG, encoding="utf-8") as fh:
        print(table([json.loads(line) for line in fh if line.strip().endswith("}")]))
