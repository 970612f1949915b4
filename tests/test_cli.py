"""The kfrtrl command: --version, info, bench (tiny grids), one-line errors with exit code 2."""
import json
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

import kfrtrl
from kfrtrl import _arguments, cli, scaling

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["bench", "--sizes", "3,5", "--estimators", "rtrl", "ok:2", "--batch", "2", "--dtype", "float64",
        "--repeats", "1", "--backend", "numpy"]


def _exit(argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code


def test_version(capsys):
    assert _exit(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kfrtrl {kfrtrl.__version__}"


def test_info_is_show_config(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kfrtrl {kfrtrl.__version__}")
    assert f"backends available: {', '.join(kfrtrl.available_backends())}" in out


def test_entry_point_is_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"kfrtrl": "kfrtrl.cli:main"}


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "--estimators", "rtrl", "foo"], "argument --estimators: estimator: expected one of ['kf', "),
    (["bench", "--estimators", "ok-0"], "argument --estimators: estimator: expected ok:k with an integer k >= 1"),
    (["bench", "--sizes", "16", "0"], "argument --sizes: expected an integer >= 1, got 0"),
    (["bench", "--sizes", "16,0"], "argument --sizes: expected an integer >= 1, got 0"),
    (["bench", "--sizes", "-4"], "argument --sizes: expected an integer >= 1, got -4"),
    (["bench", "--sizes", "x"], "argument --sizes: expected an integer >= 1, got 'x'"),
    (["bench", "--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    (["bench", "--backend", "fortran"], "argument --backend: unknown backend 'fortran'"),
    (["bench", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["bench", "--cells", "elman,foo"], "argument --cells: cell: expected one of ['elman', 'elstm', 'gru', 'lru', 'lstm', 'rhn'] "
                                        "(rhnL: depth L), got 'foo'"),
    (["bench", "--cells", "gru", "lstm2"], "argument --cells: cell: only rhn takes a depth, rhnL with an integer L >= 1"),
    (["bench", "--from", "/no/such/file.json"], "argument --from: cannot read '/no/such/file.json'"),
    (["copy", "--cell", "lru2"], "argument --cell: cell: only rhn takes a depth"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, message):
    assert _exit(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("kfrtrl") and ": error: " in captured.err and message in captured.err


@pytest.mark.parametrize("where", ["missing_dir/out.json", "."])
def test_unwritable_json_path_is_refused_before_measuring(capsys, tmp_path, where):
    path = tmp_path / where
    assert _exit(TINY + ["--json", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument --json: cannot write '{path}'" in err
    assert not (tmp_path / "missing_dir").exists()


def test_writable_check_leaves_no_file_behind(tmp_path):
    path = tmp_path / "out.json"
    assert _arguments.writable_path(str(path)) == str(path)
    assert not path.exists()


def test_bad_arguments_from_the_shell_exit_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "kfrtrl.cli", "bench", "--estimators", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("kfrtrl bench: error: argument --estimators: estimator: expected one of")
    assert proc.stderr.count("\n") == 1


def test_bench_measures_prints_the_table_and_writes_json_and_plot(capsys, tmp_path):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    assert cli.main(TINY + ["--json", str(out_json), "--plot", str(out_png)]) == 0
    captured = capsys.readouterr()
    rows = [line.split()[:2] for line in captured.out.splitlines() if line.split()[:1] in (["rtrl"], ["ok-2"])]
    assert rows[:4] == [["rtrl", "3"], ["rtrl", "5"], ["ok-2", "3"], ["ok-2", "5"]]
    assert "== elman, float64, batch 2, threads 1:" in captured.out and "time exponent" in captured.out
    assert captured.err.splitlines()[-1].startswith("[" + "#" * 30 + "] 4/4 done")
    recs = scaling.load_records(out_json)
    assert sorted((r["estimator"], r["n"], r["batch"], r["backend"]) for r in recs) == [
        ("ok-2", 3, 2, "numpy"), ("ok-2", 5, 2, "numpy"), ("rtrl", 3, 2, "numpy"), ("rtrl", 5, 2, "numpy")]
    if pytest.importorskip("matplotlib"):
        assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_bench_cells_option(capsys, tmp_path):
    out_json = tmp_path / "c.json"
    argv = ["bench", "--sizes", "3", "--estimators", "kf", "--batch", "1", "--dtype", "float64", "--repeats", "1",
            "--backend", "numpy", "--cells", "gru,rhn:2", "lstm", "--json", str(out_json)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    heads = [line.split(":")[0] for line in out.splitlines() if line.startswith("==")]
    assert heads == ["== gru, float64, batch 1, threads 1", "== lstm, float64, batch 1, threads 1",
                     "== rhn2, float64, batch 1, threads 1"]
    recs = scaling.load_records(out_json)
    assert sorted((r["cell"], r["gemm_flops"]) for r in recs) == [
        ("gru", 2 * (9 * 3 * 3 + 3 * 3 * 6 + 9 * 3 * 3)), ("lstm", 2 * 12 * 3 * 12),    # gru, rhn2: through H (3, 3)
        ("rhn2", 2 * (12 * 3 * 3 + 3 * 3 * 6 + 9 * 3 * 6))]


def test_bench_cells_default_to_elman():
    args = cli.build_parser().parse_args(["bench"])
    assert args.cells is None and scaling.grid()["cells"] == ("elman",)


def test_bench_from_json_reports_without_measuring(capsys, tmp_path):
    recs = [{"suite": scaling.SUITE, "estimator": e, "cell": "elman", "n": n, "batch": 1, "dtype": "float64", "backend": "numpy",
             "state_bytes_per_sample": 8.0 * n * n, "peak_bytes_per_sample": 16.0 * n * n, "gemm_median": 1e-9 * n ** 3,
             "time": c * n ** p, "min": None, "max": None, "rounds": 5}
            for e, c, p in (("rtrl", 1e-9, 4), ("uoro", 1e-7, 2)) for n in (16, 32, 64, 128)]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(scaling.to_json(recs)))
    assert cli.main(["bench", "--from", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == scaling.format_table(recs)
    fit = {line.split()[0]: line.split()[2] for line in out.splitlines() if "64 128" in line}
    assert fit == {"rtrl": "4.00", "uoro": "2.00"}


def test_bench_from_a_file_of_another_kind_is_a_one_line_error(capsys, tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"benchmarks": [{"name": "x", "stats": {"median": 1}, "extra_info": {}}]}')
    assert cli.main(["bench", "--from", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"kfrtrl bench: error: {path}: no kfrtrl-scaling entries")


def test_every_subcommand_has_help(capsys):
    parser = cli.build_parser()
    names = parser._subparsers._group_actions[0].choices
    assert {"info", "bench"} <= set(names)
    for name in names:
        assert _exit([name, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: kfrtrl {name}")


def test_bench_workload_times_the_training_loop_against_its_gemm_bound(capsys, tmp_path, monkeypatch):
    """--workload: one line and one record per backend, dtype and thread count (1 and all cores)."""
    from kfrtrl import workloads

    monkeypatch.setitem(workloads.WORKLOADS, "copy", (workloads.Config("elman", 4, "kf", 2),))
    out_json = tmp_path / "w.json"
    argv = ["bench", "--workload", "copy", "--backend", "numpy", "--dtype", "float32", "--repeats", "2",
            "--json", str(out_json)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    recs = json.loads(out_json.read_text())
    assert [(r["cell"], r["n"], r["spec"], r["backend"], r["dtype"], r["inputs"]) for r in recs] == [
        ("elman", 4, "kf", "numpy", "float32", "task")] * 2
    assert [r["threads"] for r in recs] == [1, os.cpu_count()]
    assert all(r["ratio"] == r["step_s"] / r["gemm_s"] > 0 for r in recs)
    assert lines[:2] == [workloads.format_record(r) for r in recs] and lines[2] == f"wrote {out_json}"


@pytest.mark.parametrize("flag", [["--sizes", "8"], ["--estimators", "kf"], ["--cells", "rhn"], ["--quick"],
                                  ["--batch", "2"], ["--plot", "x.png"]])
def test_bench_workload_refuses_the_grid_options(capsys, flag):
    assert cli.main(["bench", "--workload", "charlm"] + flag) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag[0]} applies to the scaling grid, not to --workload charlm" in err
