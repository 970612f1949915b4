"""kfrtrl.scaling: estimator and cell names, GEMM bound, slope fitting, budget, memory, JSON and table (no timing asserted)."""
import json
import math

import numpy as np
import pytest

import kfrtrl
from kfrtrl import plotting, scaling

SIZES = (16, 32, 64, 128, 256, 512)


def _records(law, sizes=SIZES, estimator="rtrl", dtype="float64", batch=1, mem_power=3, cell="elman"):
    """Synthetic records with time = law(n) and state bytes = n**mem_power."""
    return [
        {"suite": scaling.SUITE, "estimator": estimator, "cell": cell, "n": n, "batch": batch, "dtype": dtype,
         "backend": "numpy", "state_bytes_per_sample": float(n ** mem_power), "peak_bytes_per_sample": 2.0 * n ** mem_power,
         "gemm_flops": 2 * n ** 3, "gemm_median": law(n) / 4, "time": law(n), "min": law(n), "max": law(n), "rounds": 3}
        for n in sizes
    ]


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
    assert info["gemm_layers"] == [["W0", 12, 3, 6], ["W1", 18, 3, 6]]


# ---------------------------------------------------------------- GEMM lower bound

_N, _B = 5, 2
_M0 = _N + scaling.N_IN + 1  # columns of a layer reading [h; x; 1]


@pytest.mark.parametrize(("cell", "spec", "layers"), [
    # (name, rows = batch · (K + Σ earlier p), n_rec, p) by hand, n = 5, batch 2
    ("elman", "kf", [("W", _B * _N, _N, _N)]),
    ("elman", "kf-3", [("W", _B * 3 * _N, _N, _N)]),
    ("elman", "ok-8", [("W", _B * 8 * _N, _N, _N)]),
    ("elman", "rtrl", [("W", _B * _N * _M0, _N, _N)]),
    ("elman", "uoro", [("W", _B, _N, _N)]),
    ("elman", "nobacktrack", [("W", _B, _N, _N)]),
    ("elman", "tbptt-25", [("W", _B * 25, _N, _N)]),
    ("rhn", "kf", [("W", _B * 2 * _N, _N, _N)]),  # A is (2n, n): K = 2n tangents, fused: through H_b (n, n)
    ("rhn", "ok-2", [("W", _B * 4 * _N, _N, _N)]),
    ("rhn", "uoro", [("W", _B, _N, 2 * _N)]),       # not fused on the RHN: through W (2n, n)
    ("rhn", "rtrl", [("W", _B * 2 * _N * _M0, _N, 2 * _N)]),
    ("rhn3", "kf", [("W0", _B * 6 * _N, _N, 2 * _N), ("W1", _B * 8 * _N, _N, 2 * _N), ("W2", _B * 10 * _N, _N, 2 * _N)]),
    ("rhn3", "uoro", [("W0", _B, _N, 2 * _N), ("W1", _B, _N, 2 * _N), ("W2", _B, _N, 2 * _N)]),
    ("rhn3", "rtrl", [("W0", _B * (2 * _N * _M0 + 4 * _N * (_N + 1)), _N, 2 * _N),
                      ("W1", _B * (2 * _N * _M0 + 4 * _N * (_N + 1) + 2 * _N), _N, 2 * _N),
                      ("W2", _B * (2 * _N * _M0 + 4 * _N * (_N + 1) + 4 * _N), _N, 2 * _N)]),
    ("lstm", "kf", [("W", _B * 4 * _N, _N, 4 * _N)]),  # reads h only: n_rec = n although n_state = 2n
    ("lstm", "ok-2", [("W", _B * 8 * _N, _N, 4 * _N)]),
    ("lstm", "rtrl", [("W", _B * 4 * _N * _M0, _N, 4 * _N)]),
    ("lstm", "uoro", [("W", _B, _N, 4 * _N)]),
    ("gru", "kf", [("W", _B * 3 * _N, _N, 2 * _N), ("Wc", _B * 5 * _N, _N, _N)]),  # + D of W through Wc
    ("gru", "ok-3", [("W", _B * 9 * _N, _N, 2 * _N), ("Wc", _B * 11 * _N, _N, _N)]),
    ("gru", "rtrl", [("W", _B * 3 * _N * _M0, _N, 2 * _N), ("Wc", _B * (3 * _N * _M0 + 2 * _N), _N, _N)]),
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
    ("rhn3", "kf", 2 * (60 + 80 + 100) * 5 * 10),             # three (·, 5) @ (5, 10)
    ("lstm", "kf", 2 * 40 * 5 * 20),                          # (40, 5) @ (5, 20)
    ("lstm", "ok-2", 2 * 80 * 5 * 20),
    ("gru", "kf", 2 * (30 * 5 * 10 + 50 * 5 * 5)),            # (30, 5) @ (5, 10), (50, 5) @ (5, 5)
    ("gru", "uoro", 2 * (2 * 5 * 10 + 2 * 5 * 5)),
])
def test_gemm_flops_hand_totals(cell, spec, flops):
    assert scaling.gemm_flops(scaling.Workload(spec, 5, batch_size=2, cell=cell, backend="numpy").est) == flops


class _CountingOps:
    """A backend proxy adding up the GEMM flops of every kernel call that multiplies by the weights:
    jvp_blocks (2 · B · K · n_rec · p), kf_fused and ok_fused (2 · B · terms · p · n²), uoro_fused (2 · B · n²)."""

    def __init__(self, ops):
        self._ops, self.flops = ops, 0

    def __getattr__(self, name):
        return getattr(self._ops, name)

    def jvp_blocks(self, V, Vr, Wt, *rest):
        B, K, n_rec = Vr.shape
        self.flops += 2 * B * K * n_rec * Wt.shape[1]
        return self._ops.jvp_blocks(V, Vr, Wt, *rest)

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


# ---------------------------------------------------------------- fitting


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0, 4.0, 2.5])
def test_fit_exponent_recovers_an_exact_power_law(power):
    ns = np.array(SIZES)
    assert scaling.fit_exponent(ns, 3e-9 * ns ** power) == pytest.approx(power, abs=1e-12)


def test_fit_exponent_is_least_squares_in_log_log():
    ns = np.array([10, 20, 40])
    ts = np.array([1.0, 8.0, 16.0])  # slopes 3 then 1: least squares gives (log 16 - log 1) / (log 40 - log 10) = 2
    assert scaling.fit_exponent(ns, ts) == pytest.approx(2.0, abs=1e-12)


def test_fit_exponent_needs_two_distinct_sizes_and_positive_values():
    assert math.isnan(scaling.fit_exponent([64], [1.0]))
    assert math.isnan(scaling.fit_exponent([64, 64], [1.0, 2.0]))
    assert math.isnan(scaling.fit_exponent([64, 128], [1.0, math.nan]))
    assert math.isnan(scaling.fit_exponent([64, 128], [0.0, 1.0]))


@pytest.mark.parametrize(("sizes", "upper"), [
    (SIZES, [128, 256, 512]), ((16, 32, 64, 128, 256), [128, 256]), ((16, 32, 64, 128), [64, 128]),
    ((16, 32, 64), [32, 64]), ((8, 16), [8, 16]), ((8,), [8]), ((64, 16, 32, 16), [32, 64]),
])
def test_upper_half_is_the_sizes_above_the_median_at_least_two(sizes, upper):
    assert scaling.upper_half(sizes) == upper


def test_fits_use_only_the_upper_half():
    # constant overhead up to 64, then exactly c·n³: the fit must see only the cubic part
    law = lambda n: 1e-3 if n <= 64 else 1e-9 * n ** 3  # noqa: E731
    (key, f), = scaling.fits(_records(law)).items()
    assert key == ("elman", "float64", 1, "rtrl")
    assert f["sizes"] == [128, 256, 512]
    assert f["time_exp"] == pytest.approx(3.0, abs=1e-12)
    assert f["coef"] == pytest.approx(1e-9, rel=1e-9)
    assert f["mem_exp"] == pytest.approx(3.0, abs=1e-12)
    assert f["gemm_exp"] == pytest.approx(3.0, abs=1e-12)  # gemm_median = time / 4 in _records


def test_fits_without_gemm_timings_leave_its_exponent_blank():
    recs = _records(lambda n: 1e-9 * n ** 3)
    for r in recs:
        del r["gemm_median"]
    (f,) = scaling.fits(recs).values()
    assert math.isnan(f["gemm_exp"]) and f["time_exp"] == pytest.approx(3.0)
    fit_row = scaling.format_table(recs).splitlines()[-1].split()
    assert fit_row[:5] == ["rtrl", "numpy", "3.00", "—", "3.00"]


def test_fits_are_per_cell_dtype_batch_and_estimator():
    recs = (_records(lambda n: n ** 4.0) + _records(lambda n: n ** 2.0, estimator="uoro", mem_power=2)
            + _records(lambda n: n ** 3.0, dtype="float32") + _records(lambda n: n ** 1.0, batch=16)
            + _records(lambda n: n ** 2.5, cell="gru", mem_power=2))
    got = {k: (round(f["time_exp"], 9), round(f["mem_exp"], 9)) for k, f in scaling.fits(recs).items()}
    assert got == {("elman", "float64", 1, "rtrl"): (4.0, 3.0), ("elman", "float64", 1, "uoro"): (2.0, 2.0),
                   ("elman", "float32", 1, "rtrl"): (3.0, 3.0), ("elman", "float64", 16, "rtrl"): (1.0, 3.0),
                   ("gru", "float64", 1, "rtrl"): (2.5, 2.0)}


# ---------------------------------------------------------------- table


def test_table_shows_ratios_memory_and_exponents():
    recs = _records(lambda n: 1e-9 * n ** 4) + _records(lambda n: 0.5e-9 * n ** 4, sizes=(16, 32), estimator="kf",
                                                          mem_power=2)
    recs += _records(lambda n: 1e-6 * n ** 2, sizes=(1024, 2048), estimator="uoro", mem_power=2)
    for r in recs:
        r["n_threads"] = 2
    text = scaling.format_table(recs, skipped=[("elman", "rtrl", 1024, 1, "float64", "predicted 9 s per step > 2 s")])
    lines = text.splitlines()
    assert lines[0].startswith("== elman, float64, batch 1, threads 2:")
    kf16 = next(line.split() for line in lines if line.startswith("kf ") and line.split()[1] == "16")
    # n, time, unit, ×RTRL, ×GEMM, state, unit, peak, unit
    assert kf16[1:6] == ["16", "32.8", "µs", "0.5", "4"]
    assert kf16[6:8] == ["256", "B"]
    rtrl512 = next(line.split() for line in lines if line.startswith("rtrl ") and line.split()[1] == "512")
    assert rtrl512[2:7] == ["68.7", "s", "1", "4", "128"]  # 68.7 s, ratio 1 to itself, 4 to its GEMM, 128 MiB
    uoro = next(line.split() for line in lines if line.startswith("uoro ") and line.split()[1] == "1024")
    assert uoro[4] == "—"  # no RTRL at that size
    fit_rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(""):] if line[:1].isalpha()}
    assert fit_rows["rtrl"][:4] == ["numpy", "4.00", "4.00", "3.00"] and fit_rows["rtrl"][4:] == ["128", "256", "512"]
    assert fit_rows["kf"][:4] == ["numpy", "4.00", "4.00", "2.00"]
    assert lines[-1] == "skipped elman rtrl n=1024 batch=1 float64: predicted 9 s per step > 2 s"


def test_table_orders_default_estimators_first_and_groups_by_cell_dtype_and_batch():
    recs = (_records(lambda n: n, estimator="zz") + _records(lambda n: n, estimator="tbptt-25")
            + _records(lambda n: n, estimator="rtrl") + _records(lambda n: n, batch=16)
            + _records(lambda n: n, dtype="float32") + _records(lambda n: n, cell="lstm"))
    lines = scaling.format_table(recs).splitlines()
    heads = [line for line in lines if line.startswith("==")]
    assert [h.split(":")[0] for h in heads] == [
        "== elman, float32, batch 1, threads all cores", "== elman, float64, batch 1, threads all cores",
        "== elman, float64, batch 16, threads all cores", "== lstm, float64, batch 1, threads all cores"]
    first_block = lines[:lines.index("")]
    order = [line.split()[0] for line in first_block[2:]]
    assert order == ["rtrl"] * 6
    second = lines[lines.index(heads[1]) + 2:]
    assert [line.split()[0] for line in second[::6][:3]] == ["rtrl", "tbptt-25", "zz"]


@pytest.mark.parametrize(("seconds", "text"), [(2.5, "2.5 s"), (0.0081, "8.1 ms"), (7.31e-5, "73.1 µs"),
                                               (5e-8, "50 ns")])
def test_format_time(seconds, text):
    assert scaling.format_time(seconds) == text


@pytest.mark.parametrize(("nbytes", "text"), [(512, "512 B"), (139 * 1024, "139 KiB"), (3 * 2**20, "3 MiB"),
                                              (1.5 * 2**30, "1.5 GiB")])
def test_format_bytes(nbytes, text):
    assert scaling.format_bytes(nbytes) == text


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "scaling.png"
    plotting.scaling(path, _records(lambda n: 1e-9 * n ** 3) + _records(lambda n: 1e-6 * n, estimator="uoro"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- JSON


def test_json_round_trip_and_other_suites_ignored(tmp_path):
    recs = _records(lambda n: 1e-9 * n ** 3, sizes=(8, 16)) + _records(lambda n: 1e-9 * n ** 3, sizes=(8,), cell="rhn3")
    data = scaling.to_json(recs, skipped=[("elman", "rtrl", 32, 1, "float64", "too slow")])
    assert {b["group"] for b in data["benchmarks"]} == {
        "scaling elman float64 batch=1 n=8", "scaling elman float64 batch=1 n=16", "scaling rhn3 float64 batch=1 n=8"}
    data["benchmarks"].append({"name": "gemm", "stats": {"median": 1.0}, "extra_info": {"suite": "kernels"}})
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert scaling.load_records(path) == recs


def test_load_records_reads_pytest_benchmark_layout(tmp_path):
    bench = {"group": "g", "name": "test_step[x]", "stats": {"median": 0.25, "min": 0.2, "max": 0.3, "rounds": 5,
                                                              "mean": 0.26},
             "extra_info": {"suite": scaling.SUITE, "estimator": "ok-2", "n": 64, "batch": 1, "dtype": "float64"}}
    path = tmp_path / "pb.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": [bench]}))
    (rec,) = scaling.load_records(path)
    assert rec["time"] == 0.25 and rec["rounds"] == 5 and rec["estimator"] == "ok-2" and rec["n"] == 64
    assert rec["cell"] == "elman"  # written before the cell was recorded
    bench["extra_info"]["cell"] = "gru"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": [bench]}))
    assert scaling.load_records(path)[0]["cell"] == "gru"


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "invalid JSON"), ("[1, 2]", "'benchmarks' list"), ('{"benchmarks": []}', "no kfrtrl-scaling"),
])
def test_load_records_rejects_other_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        scaling.load_records(path)


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
    assert [r["gemm_flops"] for r in recs] == [2 * (6 * 2 * 4 + 10 * 2 * 2), 2 * (9 * 3 * 6 + 15 * 3 * 3),
                                               2 * (8 * 2 * 4 + 12 * 2 * 4), 2 * (12 * 3 * 6 + 18 * 3 * 6)]


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
