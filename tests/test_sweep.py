"""kfrtrl.sweep: the grid, loky, a 2-worker local Dask cluster and a Dask scheduler at an address agree run
for run, results file and restart."""
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import pytest

from kfrtrl import cli, experiments, sweep

pytest.importorskip("joblib", reason="joblib not installed (pip install 'kfrtrl[sweep]')")

TINY = {"hidden": 4, "batch": 2, "steps": 40, "lr": 0.01}


def _configs():
    return sweep.grid("copy", ["ok:2", "kf"], seeds=[0, 1, 2], **TINY)


def _deterministic(records):
    return {sweep.key(r["config"]): (r["result"], r["metric"]) for r in records}


def test_grid_spans_every_combination_in_order():
    configs = sweep.grid("copy", ["uoro", "tbptt:5"], seeds=[3, 4], hidden=[8, 16], steps=100, lr=None)
    assert len(configs) == 8
    assert configs[0] == {"task": "copy", "estimator": "uoro", "seed": 3, "hidden": 8, "steps": 100}
    assert [(c["hidden"], c["estimator"], c["seed"]) for c in configs[:4]] == [
        (8, "uoro", 3), (8, "uoro", 4), (8, "tbptt:5", 3), (8, "tbptt:5", 4)]
    assert len({sweep.key(c) for c in configs}) == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="task: expected one of"):
        sweep.grid("mnist", ["kf"], [0])
    with pytest.raises(ValueError, match="estimator: expected one of"):
        sweep.grid("copy", ["kfac"], [0])
    with pytest.raises(TypeError, match="estimators, seeds: expected sequences"):
        sweep.grid("copy", "kf", [0])
    with pytest.raises(ValueError, match="backend: expected one of"):
        sweep.run(_configs(), backend="spark")
    with pytest.raises(ValueError, match="scheduler: expected None with backend 'loky'"):
        sweep.run(_configs(), backend="loky", scheduler="tcp://127.0.0.1:8786")


def test_run_one_is_a_function_of_the_configuration():
    config = _configs()[0]
    a, b = sweep.run_one(config, kernels="numpy"), sweep.run_one(config, n_threads=2, kernels="numpy")
    assert a["result"] == b["result"] and a["metric"] == "T_cur" and a["config"] == config


def test_loky_and_dask_give_identical_results_per_configuration(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'kfrtrl[sweep]')")
    configs = _configs()
    calls = []
    loky = sweep.run(configs, backend="loky", n_jobs=2, kernels="numpy", out=tmp_path / "loky.jsonl",
                     progress=lambda done, total, text: calls.append((done, total)))
    dask = sweep.run(configs, backend="dask", n_jobs=2, kernels="numpy", out=tmp_path / "dask.jsonl")
    assert [r["config"] for r in loky] == [r["config"] for r in dask] == configs
    assert _deterministic(loky) == _deterministic(dask)
    assert calls[0] == (0, 6) and sorted(calls[1:]) == [(k, 6) for k in range(1, 7)]
    assert len(set(json.dumps(r["result"], sort_keys=True) for r in loky)) > 1      # the seeds differ
    for name in ("loky.jsonl", "dask.jsonl"):
        lines = (tmp_path / name).read_text().splitlines()
        assert sorted(sweep.key(json.loads(line)["config"]) for line in lines) == sorted(map(sweep.key, configs))


def test_restart_runs_only_what_is_missing(tmp_path, monkeypatch):
    out = tmp_path / "r.jsonl"
    configs = _configs()
    first = sweep.run(configs[:4], backend="loky", n_jobs=2, kernels="numpy", out=out)
    with open(out, "ab") as fh:
        fh.write(b'{"config": {"task": "co')           # a run torn by a crash mid-write
    ran = []
    real = sweep._run_loky

    def counting(todo, *args):
        ran.extend(todo)
        yield from real(todo, *args)

    monkeypatch.setattr(sweep, "_run_loky", counting)
    records = sweep.run(configs, backend="loky", n_jobs=2, kernels="numpy", out=out)
    assert ran == configs[4:]
    assert records[:4] == first
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["config"] in configs for line in lines)
    ran.clear()
    assert _deterministic(sweep.run(configs, backend="loky", out=out)) == _deterministic(records)
    assert ran == []


def test_a_foreign_results_file_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="out: expected a kfrtrl sweep JSON-lines file"):
        sweep.run(_configs(), out=out)


def test_table_groups_by_estimator_and_varying_options():
    records = [{"config": {"task": "copy", "estimator": e, "seed": s, "hidden": n, "steps": 9},
                "result": {"T_cur": float(s + n)}, "metric": "T_cur"}
               for e in ("kf", "ok:2") for n in (4, 8) for s in (0, 1, 2)]
    rows = sweep.summarize(records)
    assert [(r["estimator"], r["options"]["hidden"], r["runs"], r["mean"], r["min"], r["max"]) for r in rows] == [
        ("kf", 4, 3, 5.0, 4.0, 6.0), ("kf", 8, 3, 9.0, 8.0, 10.0),
        ("ok:2", 4, 3, 5.0, 4.0, 6.0), ("ok:2", 8, 3, 9.0, 8.0, 10.0)]
    text = sweep.table(records).splitlines()
    assert text[0].split() == ["estimator", "hidden", "metric", "runs", "mean", "min", "max"]
    assert text[1].split() == ["kf", "4", "T_cur", "3", "5", "4", "6"]


@pytest.mark.parametrize("task, options, metric", [
    ("charlm", {"hidden": 4, "batch": 2, "steps": 20, "valid_chars": 200}, "valid_bpc"),
    ("series", {"hidden": 3, "steps": 30, "synthetic": "delay", "optimizer": "kalman"}, "ratio_const"),
    ("noise", {"hidden": 4, "chains": 3, "steps": 12, "burn_in": 4, "every": 4}, "rel_var_grad"),
])
def test_every_task_runs_from_its_configuration(task, options, metric):
    config = sweep.grid(task, ["kf"], [0], **options)[0]
    record = sweep.run_one(config, kernels="numpy")
    assert record["metric"] == metric and math.isfinite(record["result"][metric])
    assert sweep.run_one(config, kernels="numpy")["result"] == record["result"]


def test_unknown_options_are_refused():
    assert {"hidden", "steps", "lr", "batch", "clip"} <= set(sweep.options_of("copy"))
    assert {"file", "reset_every", "valid_chars"} <= set(sweep.options_of("charlm"))
    assert {"cell", "depth", "dtype", "init_std", "faithful"} <= set(sweep.options_of("copy"))
    assert not {"log", "save_every", "model"} & set(sweep.options_of("copy") + sweep.options_of("noise"))
    with pytest.raises(ValueError, match="options: expected options of the copy task among .*, got 'horizon'"):
        sweep.grid("copy", ["kf"], [0], horizon=3)


def test_command_runs_prints_the_table_and_restarts(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "r.jsonl", tmp_path / "r.png"
    argv = ["sweep", "copy", "--estimators", "ok:2,kf", "--seeds", "0,1", "--hidden", "3,4", "--batch", "2",
            "--steps", "20", "--set", "clip=0.5", "--jobs", "2", "--kernels", "numpy", "--out", str(out),
            "--plot", str(png)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert lines[0] == f"copy: 8 runs, results in {out}"
    assert lines[1].split() == ["estimator", "hidden", "metric", "runs", "mean", "min", "max"]
    assert [line.split()[:4] for line in lines[2:6]] == [
        ["ok:2", "3", "T_cur", "2"], ["kf", "3", "T_cur", "2"], ["ok:2", "4", "T_cur", "2"], ["kf", "4", "T_cur", "2"]]
    assert png.stat().st_size > 0 and "8/8" in printed.err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8 and {r["config"]["clip"] for r in records} == {0.5}
    assert cli.main(argv[:-2]) == 0                                  # again: nothing left to run
    assert "0 to run, 8 done before" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 8


@pytest.mark.parametrize(("argv", "message"), [
    (["sweep", "copy", "--estimators", "kf", "--out", "x.jsonl", "--scheduler", "tcp://127.0.0.1:1"],
     "--scheduler needs --backend dask"),
    (["sweep", "copy", "--estimators", "kf", "--out", "x.jsonl", "--seeds", "0,-1"], "argument --seeds: expected"),
    (["sweep", "copy", "--estimators", "kf", "--out", "x.jsonl", "--set", "clip"], "argument --set: expected KEY="),
    (["sweep", "copy", "--estimators", "kf", "--out", "x.jsonl", "--backend", "spark"], "argument --backend: invalid"),
    (["sweep", "mnist", "--estimators", "kf", "--out", "x.jsonl"], "argument task: invalid choice: 'mnist'"),
])
def test_command_bad_arguments_give_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as exc:                     # argparse's errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_charlm_without_a_file_trains_on_the_bundled_corpus(capsys):
    argv = ["charlm", "--hidden", "4", "--batch", "2", "--steps", "30", "--valid-chars", "300", "--backend", "numpy"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("charlm, vocabulary 65,")
    assert lines[-1].startswith("bpc ") and 0.0 < float(lines[-1].split()[1]) < 7.0


# ---------------------------------------------------------------- the series task; a scheduler at an address


def test_series_sweep_on_loky_and_a_local_dask_cluster_is_identical_and_is_the_experiment(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'kfrtrl[sweep]')")
    configs = sweep.grid("series", ["kf", "ok:2"], [0, 1], hidden=3, steps=30, synthetic="lgss", lr_tau=10.0)
    loky = sweep.run(configs, backend="loky", n_jobs=2, kernels="numpy")
    dask = sweep.run(configs, backend="dask", n_jobs=2, kernels="numpy")
    assert _deterministic(loky) == _deterministic(dask)
    assert {r["metric"] for r in loky} == {"ratio_const"} and len({r["result"]["mse"] for r in loky}) == 4
    setup = experiments.Setup(hidden=3, batch=1, steps=30, lr=1e-2, seed=1, backend="numpy", threads=1)
    row = experiments.series(synthetic="lgss", estimators=["ok:2"], setup=setup, lr_tau=10.0)["rows"][0]
    assert loky[3]["config"]["estimator"] == "ok:2" and loky[3]["config"]["seed"] == 1
    assert loky[3]["result"] == {k: v for k, v in row.items() if k not in ("estimator", "seconds")}


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a Dask scheduler started as its own process on 127.0.0.1, with one ``dask worker``
    process of two single-threaded workers (importing kfrtrl from this tree): what a remote cluster is."""
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'kfrtrl[sweep]')")
    from distributed import Client

    where = tmp_path_factory.mktemp("dask")
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    run = {"cwd": where, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    info = where / "scheduler.json"
    processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                   "--port", "0", "--no-dashboard", "--scheduler-file", str(info)], **run)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        client = Client(scheduler_file=str(info), timeout=60)
        address = client.scheduler.address
        processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers",
                                           "2", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                           "--local-directory", str(where)], **run))
        client.wait_for_workers(2, timeout=60)
        yield address
        client.shutdown()                               # the scheduler and its workers
        client.close()
    finally:
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_scheduler_at_an_address_gives_the_loky_results(scheduler, tmp_path, capsys, monkeypatch):
    import distributed

    def no_local_cluster(*args, **kwargs):
        raise AssertionError("a local cluster was started although a scheduler address was given")

    monkeypatch.setattr(distributed, "LocalCluster", no_local_cluster)
    configs = _configs()                                # 2 estimators x 3 seeds of the copy task
    loky = sweep.run(configs, backend="loky", n_jobs=2, kernels="numpy")
    remote = sweep.run(configs, backend="dask", scheduler=scheduler, kernels="numpy", out=tmp_path / "r.jsonl")
    assert [r["config"] for r in remote] == configs and _deterministic(remote) == _deterministic(loky)
    out = tmp_path / "cli.jsonl"
    argv = ["sweep", "copy", "--estimators", "ok:2,kf", "--seeds", "0,1,2", "--hidden", "4", "--batch", "2",
            "--steps", "40", "--lr", "0.01", "--kernels", "numpy", "--backend", "dask", "--scheduler", scheduler,
            "--out", str(out)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith(f"copy: 6 runs, results in {out}")
    assert _deterministic(json.loads(line) for line in out.read_text().splitlines()) == _deterministic(loky)
