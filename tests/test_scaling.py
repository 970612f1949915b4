"""kfrtrl.scaling.measure: estimator and cell names, GEMM bound, budget, memory and the direct loop (no timing asserted).

Fits, tables, plots and JSON (kfrtrl.scaling.report): tests/test_scaling_report.py.
"""

import numpy as np
import pytest

import kfrtrl
from kfrtrl import scaling

# ---------------------------------------------------------------- names


@pytest.mark.parametrize(("spec", "label"), [
    ("rtrl", "rtrl"), ("uoro", "uoro"), ("kf", "kf"), ("kf:3", "kf-3"), ("nobacktrack", "nobacktrack"),
    ("ok-8", "ok-8"), ("ok:8", "ok-8"), ("tbptt-25", "tbptt-25"), ("ok", "ok"),
])
def test_canonical_labels(spec, label):
    assert scaling.canonical(spec) == label
    assert scaling.canonical(label) == label


@pytest.mark.parametrize("spec", ["foo", "ok-0", "rtrl-3", "ok-x", ""])
def test_canonical_rejects_bad_specs_naming_the_estimator(spec):
    with pytest.raises(ValueError, match=f"estimator: .*got '{spec}'"):
        scaling.canonical(spec)


def test_default_estimators_are_canonical():
    assert [scaling.canonical(e) for e in scaling.DEFAULT_ESTIMATORS] == list(scaling.DEFAULT_ESTIMATORS)


@pytest.mark.parametrize(("spec", "cls", "attr", "value"), [
    ("rtrl", kfrtrl.RTRL, None, None), ("uoro", kfrtrl.UORO, None, None), ("kf", kfrtrl.KFRTRL, "n_chains", 1),
    ("nobacktrack", kfrtrl.NoBackTrack, None, None), ("ok-3", kfrtrl.OK, "rank", 3),
    ("tbptt-7", kfrtrl.TBPTT, "truncation", 7),
])
def test_workload_builds_the_named_estimator(spec, cls, attr, value):
    work = scaling.Workload(spec, n=5, batch_size=2, backend="numpy")
    assert type(work.est) is cls and work.est.batch_size == 2 and work.label == spec
    if attr:
        assert getattr(work.est, attr) == value


# ---------------------------------------------------------------- cells


@pytest.mark.parametrize(("spec", "parsed", "label"), [
    ("elman", ("elman", None), "elman"), ("lstm", ("lstm", None), "lstm"), ("gru", ("gru", None), "gru"),
    ("rhn", ("rhn", None), "rhn"), ("rhn1", ("rhn", 1), "rhn"), ("rhn3", ("rhn", 3), "rhn3"),
    ("rhn:3", ("rhn", 3), "rhn3"), ("rhn-12", ("rhn", 12), "rhn12"),
])
def test_parse_cell_and_labels(spec, parsed, label):
    assert scaling.parse_cell(spec) == parsed
    assert scaling.canonical_cell(spec) == label
    assert scaling.canonical_cell(label) == label


@pytest.mark.parametrize(("spec", "match"), [
    ("foo", "cell: expected one of \\['elman', 'elstm', 'gru', 'lru', 'lstm', 'rhn'\\] .*got 'foo'"),
    ("", "cell: expected one of .*got ''"), ("RHN", "got 'RHN'"), ("rhn:", "got 'rhn:'"), ("rhn-x", "got 'rhn-x'"),
    ("rhn0", "cell: only rhn takes a depth, rhnL with an integer L >= 1, got 'rhn0'"),
    ("lstm2", "cell: only rhn takes a depth.*got 'lstm2'"),
])
def test_parse_cell_rejects_bad_names(spec, match):
    with pytest.raises(ValueError, match=match):
        scaling.parse_cell(spec)


def test_parse_cell_rejects_non_strings():
    with pytest.raises(TypeError, match="cell: expected a string such as 'lstm' or 'rhn3', got int"):
        scaling.parse_cell(3)


@pytest.mark.parametrize(("spec", "cls", "shapes"), [
    ("elman", kfrtrl.Elman, {"W": (5, 14)}), ("rhn", kfrtrl.RHN, {"W": (10, 14)}),
    ("rhn3", kfrtrl.RHN, {"W0": (10, 14), "W1": (10, 6), "W2": (10, 6)}), ("lstm", kfrtrl.LSTM, {"W": (20, 14)}),
    ("gru", kfrtrl.GRU, {"W": (10, 14), "Wc": (5, 14)}),
    ("elstm", kfrtrl.ELSTM, {"W": (10, 9), "w": (10, 1), "Wo": (5, 14)}),
    ("lru", kfrtrl.LRU, {"B": (5, 8), "nu": (5, 1), "C": (5, 14)}),
])
def test_make_cell_builds_the_named_cell(spec, cls, shapes):
    cell = scaling.make_cell(spec, 5, dtype="float32", rng=0)
    assert type(cell) is cls and cell.n_in == scaling.N_IN and cell.n_hidden == 5 and cell.dtype == np.float32
    assert cell.param_shapes() == shapes


def test_workload_builds_the_named_cell_and_records_it():
    work = scaling.Workload("kf", 3, cell="rhn:2", backend="numpy")
    assert isinstance(work.cell, kfrtrl.RHN) and work.cell.depth == 2 and work.est.cell is work.cell
    work.warm_up()
    info = work.info(gemm_repeats=1)
    assert info["cell"] == "rhn2" and info["gemm_flops"] == scaling.gemm_flops(work.est) and info["gemm_median"] > 0
    assert info["gemm_layers"] == [["H", 12, 3, 3], ["W0", 3, 3, 6], ["W1", 9, 3, 6]]


# ---------------------------------------------------------------- GEMM lower bound

_N, _B = 5, 2
_M0 = _N + scaling.N_IN + 1  # columns of a layer reading [h; x; 1]


@pytest.mark.parametrize(("cell", "spec", "layers"), [
    # (name, rows = batch · (K + Σ earlier p), n_rec, p) by hand, n = 5, batch 2; "H": the K
    # tangents through the step Jacobian (N, N), fused or formed (then rows = batch · (N + Σ earlier p))
    ("elman", "kf", [("H", _B * _N, _N, _N)]),
    ("elman", "kf-3", [("H", _B * 3 * _N, _N, _N)]),
    ("elman", "ok-8", [("H", _B * 8 * _N, _N, _N)]),
    ("elman", "rtrl", [("H", _B * _N * _M0, _N, _N), ("W", _B * _N, _N, _N)]),  # exact RTRL: always formed
    ("elman", "uoro", [("H", _B, _N, _N)]),
    ("elman", "nobacktrack", [("W", _B, _N, _N)]),
    ("elman", "tbptt-25", [("W", _B * 25, _N, _N)]),
    ("rhn", "kf", [("H", _B * 2 * _N, _N, _N)]),  # A is (2n, n): K = 2n tangents, fused: through H_b (n, n)
    ("rhn", "ok-2", [("H", _B * 4 * _N, _N, _N)]),
    ("rhn", "uoro", [("W", _B, _N, 2 * _N)]),       # not fused on the RHN, one tangent: through W (2n, n)
    ("rhn", "rtrl", [("H", _B * 2 * _N * _M0, _N, _N), ("W", _B * _N, _N, 2 * _N)]),
    ("rhn3", "kf", [("H", _B * 6 * _N, _N, _N), ("W0", _B * _N, _N, 2 * _N), ("W1", _B * 3 * _N, _N, 2 * _N),
                    ("W2", _B * 5 * _N, _N, 2 * _N)]),
    ("rhn3", "uoro", [("W0", _B, _N, 2 * _N), ("W1", _B, _N, 2 * _N), ("W2", _B, _N, 2 * _N)]),
    ("rhn3", "rtrl", [("H", _B * (2 * _N * _M0 + 4 * _N * (_N + 1)), _N, _N), ("W0", _B * _N, _N, 2 * _N),
                      ("W1", _B * 3 * _N, _N, 2 * _N), ("W2", _B * 5 * _N, _N, 2 * _N)]),
    ("lstm", "kf", [("W", _B * 4 * _N, _N, 4 * _N)]),  # reads h only: n_rec = n although n_state = 2n
    ("lstm", "ok-2", [("W", _B * 8 * _N, _N, 4 * _N)]),
    ("lstm", "rtrl", [("H", _B * 4 * _N * _M0, 2 * _N, 2 * _N), ("W", _B * 2 * _N, _N, 4 * _N)]),  # N = 2n
    ("lstm", "uoro", [("W", _B, _N, 4 * _N)]),
    ("gru", "kf", [("H", _B * 3 * _N, _N, _N), ("W", _B * _N, _N, 2 * _N), ("Wc", _B * 3 * _N, _N, _N)]),
    ("gru", "ok-3", [("H", _B * 9 * _N, _N, _N), ("W", _B * _N, _N, 2 * _N), ("Wc", _B * 3 * _N, _N, _N)]),
    ("gru", "rtrl", [("H", _B * 3 * _N * _M0, _N, _N), ("W", _B * _N, _N, 2 * _N), ("Wc", _B * 3 * _N, _N, _N)]),
    ("gru", "uoro", [("W", _B, _N, 2 * _N), ("Wc", _B, _N, _N)]),
    ("gru", "tbptt-4", [("W", _B * 4, _N, 2 * _N), ("Wc", _B * 4, _N, _N)]),
])
def test_gemm_layers_by_hand(cell, spec, layers):
    work = scaling.Workload(spec, _N, batch_size=_B, cell=cell, backend="numpy")
    assert scaling.gemm_layers(work.est) == layers
    assert scaling.gemm_flops(work.est) == sum(2 * rows * k * p for _, rows, k, p in layers)


@pytest.mark.parametrize(("cell", "spec", "flops"), [
    ("elman", "kf", 2 * 10 * 5 * 5),                          # (10, 5) @ (5, 5)
    ("rhn", "kf", 2 * 20 * 5 * 5),                            # fused: (20, 5) @ (5, 5) with H_b
    ("rhn3", "kf", 2 * 60 * 5 * 5 + 2 * (10 + 30 + 50) * 5 * 10),  # (60, 5) @ (5, 5) with H_b, formed by three (·, 5) @ (5, 10)
    ("lstm", "kf", 2 * 40 * 5 * 20),                          # (40, 5) @ (5, 20)
    ("lstm", "ok-2", 2 * 80 * 5 * 20),
    ("gru", "kf", 2 * (30 * 5 * 5 + 10 * 5 * 10 + 30 * 5 * 5)),  # (30, 5) @ (5, 5) with H_b; forming it: (10, 5) @ (5, 10), (30, 5) @ (5, 5)
    ("gru", "uoro", 2 * (2 * 5 * 10 + 2 * 5 * 5)),
])
def test_gemm_flops_hand_totals(cell, spec, flops):
    assert scaling.gemm_flops(scaling.Workload(spec, 5, batch_size=2, cell=cell, backend="numpy").est) == flops


class _CountingOps:
    """A backend proxy adding up the GEMM flops of every kernel call that multiplies by the weights:
    jvp_blocks (2 · B · K · n_rec · p), jvp_dense and jvp_state (2 · B · K · N²), kf_fused and ok_fused (2 · B · terms · p · n²),
    uoro_fused (2 · B · n²)."""

    def __init__(self, ops):
        self._ops, self.flops = ops, 0

    def __getattr__(self, name):
        return getattr(self._ops, name)

    def jvp_blocks(self, V, Vr, Wt, *rest):
        B, K, n_rec = Vr.shape
        self.flops += 2 * B * K * n_rec * Wt.shape[1]
        return self._ops.jvp_blocks(V, Vr, Wt, *rest)

    def jvp_dense(self, V, *rest):
        B, K, N = V.shape
        self.flops += 2 * B * K * N * N
        return self._ops.jvp_dense(V, *rest)

    def jvp_state(self, Ht, G, *rest):
        B, N, P = G.shape
        self.flops += 2 * B * P * N * N
        return self._ops.jvp_state(Ht, G, *rest)

    def kf_fused(self, A, *rest):
        B, C, p, n = A.shape
        self.flops += 2 * B * C * p * n * n
        return self._ops.kf_fused(A, *rest)

    def ok_fused(self, A, *rest):
        B, r, p, n = A.shape
        self.flops += 2 * B * r * p * n * n
        return self._ops.ok_fused(A, *rest)

    def uoro_fused(self, v, *rest):
        B, n = v.shape
        self.flops += 2 * B * n * n
        return self._ops.uoro_fused(v, *rest)


@pytest.mark.parametrize("cell", ["elman", "rhn", "rhn3", "lstm", "gru"])
@pytest.mark.parametrize("spec", ["rtrl", "kf", "kf-2", "ok-2", "uoro", "nobacktrack"])
def test_gemm_bound_is_the_gemm_work_of_the_actual_step(cell, spec):
    # RTRL, KF, OK and UORO do exactly the bound's GEMMs; NoBackTrack at least (it needs each state
    # unit's |F_i|, so it pushes the dense immediate terms through the later layers, which the bound
    # counts as avoidable)
    work = scaling.Workload(spec, 3, batch_size=2, cell=cell, backend="numpy")
    counter = work.est.ops = _CountingOps(work.est.ops)
    work.step()
    bound = scaling.gemm_flops(work.est)
    if spec == "nobacktrack":
        assert counter.flops >= bound
        assert (counter.flops == bound) == (cell in ("elman", "rhn", "lstm"))  # single-layer cells: no immediate GEMM
    else:
        assert counter.flops == bound


# ---------------------------------------------------------------- budget


def test_budget_time_and_memory_limits():
    key = ("k", 1, "float64")
    slow = scaling.Budget(max_seconds=2.0, max_bytes=1e12)
    slow.record(key, 64, 0.01, 1e6)
    assert slow.skip_reason(key, 4096) is None  # one point: no prediction
    slow.record(key, 128, 0.16, 8e6)  # time slope 4: 2.56 s at 256
    assert slow.skip_reason(key, 256) == "predicted 2.56 s per step > 2 s"
    assert slow.skip_reason(("other", 1, "float64"), 256) is None
    big = scaling.Budget(max_seconds=100.0, max_bytes=2**26)  # 64 MiB
    big.record(key, 64, 0.01, 1e6)
    big.record(key, 128, 0.16, 8e6)  # memory slope 3: 64e6 B at 256 < 64 MiB; 512e6 at 512 > 64 MiB
    assert big.skip_reason(key, 256) is None
    assert big.skip_reason(key, 512) == "predicted state of 488 MiB > 64 MiB"


def test_budget_clips_the_slope():
    key = ("k", 1, "float64")
    budget = scaling.Budget(max_seconds=1.0, max_bytes=1e12)
    budget.record(key, 10, 0.5, 1.0)
    budget.record(key, 20, 0.4, 1.0)  # decreasing time: slope clipped to 1 -> 0.8 s at 40, 1.6 s at 80
    assert budget.skip_reason(key, 40) is None
    assert budget.skip_reason(key, 80) == "predicted 1.6 s per step > 1 s"
    noisy = scaling.Budget(max_seconds=1.0, max_bytes=1e12)
    noisy.record(key, 10, 1e-4, 1.0)
    noisy.record(key, 20, 0.1, 1.0)  # slope ~10 (a noisy point): clipped to 4 -> 1.6 s at 40
    assert noisy.skip_reason(key, 40) == "predicted 1.6 s per step > 1 s"


# ---------------------------------------------------------------- memory and the direct loop


def _state_bytes(label, n):
    work = scaling.Workload(label, n, backend="numpy")
    work.warm_up(steps=0)  # the transient only: no step but TBPTT's filling of its window
    return work.state_bytes()


def test_rtrl_state_holds_the_full_influence():
    n, m = 8, 8 + scaling.N_IN + 1
    held = _state_bytes("rtrl", n)
    # G plus the spare influence-sized buffer H·G is written into (swapped each step)
    assert 2 * n * m * n * 8 <= held < 2 * n * m * n * 8 + 4 * m * 8


_M = lambda n: n + scaling.N_IN + 1  # noqa: E731  (columns of W)


@pytest.mark.parametrize(("label", "model"), [
    ("rtrl", lambda n: n * n * _M(n)),  # ~n³
    ("uoro", lambda n: n * _M(n)), ("nobacktrack", lambda n: n * _M(n)),  # s ⊗ θ: ~n²
    ("kf", lambda n: n * n + _M(n)), ("ok-2", lambda n: n * n + _M(n)),  # A ⊗ u: ~n²
    ("tbptt-3", lambda n: n + _M(n)),  # activations only, ~n
])
def test_state_memory_grows_as_n3_for_rtrl_and_n2_for_the_approximations(label, model):
    ns = [16, 32, 64]  # allocation only (and TBPTT's three small steps)
    exp = scaling.fit_exponent(ns, [_state_bytes(label, n) for n in ns])
    assert exp == pytest.approx(scaling.fit_exponent(ns, [model(n) for n in ns]), abs=0.05)


def test_warm_up_reaches_the_steady_state():
    work = scaling.Workload("tbptt-4", 5, backend="numpy")
    work.warm_up(steps=0)
    full = work.state_bytes()
    work.warm_up(steps=3)
    assert work.state_bytes() == full > 0


@pytest.mark.parametrize("spec", ["rtrl", "ok-2", "uoro", "tbptt-3"])
def test_state_memory_is_linear_in_the_batch(spec):
    def total(batch):
        work = scaling.Workload(spec, 6, batch_size=batch, backend="numpy")
        work.warm_up(steps=0)
        return work.state_bytes() * batch

    per_sample = total(2) - total(1)
    assert per_sample > 0
    assert total(5) - total(1) == 4 * per_sample


def test_peak_is_at_least_the_state():
    work = scaling.Workload("rtrl", 6, backend="numpy")
    work.step()
    assert work.peak_bytes() > work.state_bytes()


def test_run_measures_in_size_order_and_skips_by_budget():
    calls = []
    specs = ["rtrl", "kf:1"]
    budget = scaling.Budget(max_seconds=0.0)  # anything predicted is too slow: only the first two sizes run
    recs, skipped = scaling.run(specs, [6, 3, 4], [2], ["float32"], backend="numpy", repeats=1, budget=budget,
                                progress=lambda *a: calls.append(a))
    assert [(r["estimator"], r["n"]) for r in recs] == [("rtrl", 3), ("rtrl", 4), ("kf-1", 3), ("kf-1", 4)]
    assert [s[:5] for s in skipped] == [("elman", "rtrl", 6, 2, "float32"), ("elman", "kf-1", 6, 2, "float32")]
    assert all(r["time"] > 0 and r["gemm_median"] > 0 and r["dtype"] == "float32" and r["batch"] == 2 for r in recs)
    assert all(r["cell"] == "elman" for r in recs)
    assert calls[0] == (0, 6, "elman rtrl n=3 batch=2 float32") and calls[-1] == (6, 6, "done")


def test_run_measures_each_cell_with_its_own_budget():
    budget = scaling.Budget(max_seconds=0.0)  # two sizes per (cell, estimator), then skipped
    recs, skipped = scaling.run(["kf"], [2, 3, 4], [1], ["float64"], backend="numpy", repeats=1, budget=budget,
                                cells=["gru", "rhn:2"])
    assert [(r["cell"], r["n"]) for r in recs] == [("gru", 2), ("gru", 3), ("rhn2", 2), ("rhn2", 3)]
    assert [s[:3] for s in skipped] == [("gru", "kf", 4), ("rhn2", "kf", 4)]
    # K tangents through H (n, n), formed by n tangents through the layers (+ the immediate terms)
    assert [r["gemm_flops"] for r in recs] == [2 * (6 * 2 * 2 + 2 * 2 * 4 + 6 * 2 * 2), 2 * (9 * 3 * 3 + 3 * 3 * 6 + 9 * 3 * 3),
                                               2 * (8 * 2 * 2 + 2 * 2 * 4 + 6 * 2 * 4), 2 * (12 * 3 * 3 + 3 * 3 * 6 + 9 * 3 * 6)]


def test_measure_runs_the_whole_step_under_the_thread_limit(monkeypatch):
    # the estimator limits only its propagation; the forward pass and gradient must be limited too
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    step = scaling.Workload.step

    def spy(self):
        seen.append({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})
        step(self)

    monkeypatch.setattr(scaling.Workload, "step", spy)
    scaling.measure("uoro", 3, backend="numpy", n_threads=1, repeats=1)
    assert len(seen) >= 3 and all(s == {1} for s in seen)


def test_elementwise_rtrl_pushes_one_cotangent_through_the_readout():
    work = scaling.Workload("rtrl", 5, batch_size=2, cell="elstm", backend="numpy")
    assert scaling.tangents(work.est) == 1
    assert scaling.gemm_layers(work.est) == [("W", 2, 0, 10), ("Wo", 2, 5, 5)]
