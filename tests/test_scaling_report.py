"""kfrtrl.scaling.report: slope fitting, the table, the plot and the JSON records (synthetic records, no timing)."""
import json
import math

import numpy as np
import pytest

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
