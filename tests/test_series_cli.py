"""The series command (``kfrtrl series``) and the library function it calls (``kfrtrl.experiments.series``)."""
import numpy as np
import pytest

from kfrtrl import checkpoint, synthetic

# ---------------------------------------------------------------- the command


def _cli(capsys, *argv):
    from kfrtrl.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


TINY = ["--steps", "40", "--hidden", "3", "--backend", "numpy"]


def test_cli_series_synthetic_lgss_prints_mse_and_ratios_last(capsys, tmp_path):
    rc, out, _ = _cli(capsys, "series", "--synthetic", "lgss", "--estimator", "rtrl", *TINY,
                      "--lr-tau", "10", "--lr-rho", "0.75", "--plot", tmp_path / "s.png", "--json", tmp_path / "s.json")
    last = out.strip().splitlines()[-1].split()
    assert rc == 0 and last[0::2] == ["mse", "ratio_naive", "ratio_const", "ratio_optimal"]
    assert all(np.isfinite(float(v)) for v in last[1::2])
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    rc, again, _ = _cli(capsys, "series", "--from", tmp_path / "s.json", tmp_path / "s.json")
    assert rc == 0 and again.strip().splitlines()[-1] == out.strip().splitlines()[-1] + " estimator rtrl"


def test_cli_series_file_lob_and_kalman(capsys, tmp_path):
    path = tmp_path / "lob.csv"
    data = synthetic.lob(60, rng=0)
    path.write_text(",".join(synthetic.LOB_COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in data))
    rc, out, _ = _cli(capsys, "series", path, "--target", "mid_change", "--inputs", "ofi,imbalance", "--horizon", "2",
                      "--estimator", "nobacktrack", "--optimizer", "kalman", "--kalman-rank", "2", *TINY)
    assert rc == 0 and out.strip().splitlines()[-1].split()[0::2] == ["mse", "ratio_naive", "ratio_const"]
    rc, out, _ = _cli(capsys, "series", "--synthetic", "lob", "--batch", "2", "--estimator", "kf,tbptt:3", *TINY)
    assert rc == 0 and out.strip().splitlines()[-1].endswith("estimator tbptt:3")


def test_cli_series_resume_continues_the_saved_run(capsys, tmp_path):
    base = ["series", "--synthetic", "lgss", "--estimator", "uoro", "--hidden", "3", "--backend", "numpy",
            "--optimizer", "kalman", "--length", "32"]
    _, full, _ = _cli(capsys, *base, "--steps", "30", "--save", tmp_path / "full")
    _cli(capsys, *base, "--steps", "20", "--save", tmp_path / "half")
    _, resumed, _ = _cli(capsys, *base, "--steps", "10", "--resume", tmp_path / "half")
    assert resumed.splitlines()[-1] == full.splitlines()[-1]
    assert "mse" in full.splitlines()[-1]


def test_cli_series_checkpoint_records_the_options_and_a_resume_names_each_difference(capsys, tmp_path):
    base = ["series", "--synthetic", "lgss", "--estimator", "uoro", "--hidden", "3", "--backend", "numpy",
            "--steps", "5", "--length", "16"]
    assert _cli(capsys, *base, "--save", tmp_path / "ckpt")[0] == 0
    run = checkpoint.load(tmp_path / "ckpt")[1]["run"]
    assert run["estimator"] == "uoro" and run["lr"] == 1e-2 and run["lag"] is None and run["length"] == 16
    assert not {"steps", "save", "resume", "threads", "json"} & set(run)
    rc, _, err = _cli(capsys, *base, "--lr", "0.002", "--obs-noise", "0.5", "--seed", "3", "--resume",
                      tmp_path / "ckpt")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert ("differs from it in lr: 0.002 here, 0.01 in the checkpoint; obs_noise: 0.5 here, 1.0 in the checkpoint; "
            "seed: 3 here, 0 in the checkpoint") in err
    # the synthetic series' length follows --steps unless given: a resume without it is told the saved length
    rc, _, err = _cli(capsys, *base[:-2], "--resume", tmp_path / "ckpt")
    assert rc == 2 and "length: 7 here, 16 in the checkpoint" in err
    assert _cli(capsys, *base, "--steps", "3", "--resume", tmp_path / "ckpt")[0] == 0


@pytest.mark.parametrize("argv, match", [
    (["series"], "expected a FILE or --synthetic"),
    (["series", "--synthetic", "lgss", "--lag", "3"], "--lag: only --synthetic delay or lob takes it, got --synthetic lgss"),
    (["series", "--synthetic", "delay", "--impact", "0.3"], "--impact: only --synthetic lob takes it, got --synthetic delay"),
    (["series", "BAD", "--target", "a", "--memory", "4"], "--memory: only --synthetic lgss or lob takes it, got a FILE"),
    (["series", "BAD", "--target", "b"], "row 1, column 'b': expected a number, got 'x'"),
    (["series", "BAD", "--target", "zz"], "target: expected column names or indices among ['a', 'b'], got 'zz'"),
    (["series", "BAD", "--target", "a", "--inputs", "a,q"], "inputs: expected column names"),
    (["series", "missing.csv", "--target", "a"], "cannot read 'missing.csv'"),
    (["series", "--synthetic", "lgss", "--lr-rho", "0.5"], "--lr-rho"),
    (["series", "--synthetic", "arma"], "--synthetic"),
])
def test_cli_series_bad_files_and_columns_are_one_line_exit_2(capsys, tmp_path, argv, match):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,x\n4,5\n")
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n3,4\n4,5\n")
    argv = [str(bad if "column 'b'" in match else good) if a == "BAD" else a for a in argv]
    try:
        rc, _, err = _cli(capsys, *argv)
    except SystemExit as info:
        rc, err = info.code, capsys.readouterr().err
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1


def test_readme_series_example_runs_and_beats_the_constant():
    import pathlib
    import re

    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("README.md not next to the tests")
    code = re.search(r"## Long time series\n.*?```python\n(.*?)```", readme.read_text(), re.S).group(1)
    code = code.replace("20001", "3001").replace("train.run(trainer, task, 20000)", "train.run(trainer, task, 3000)")
    code = code.replace("kfrtrl.RTRL(cell)", "kfrtrl.RTRL(cell, backend='numpy')")
    scope = {}
    exec(compile(code, "README series example", "exec"), scope)
    assert scope["task"].metrics(last=0.2)["ratio_const"] < 0.95


def test_cli_series_builds_the_cell_it_is_given(capsys):
    base = ["series", "--synthetic", "lgss", "--estimator", "rtrl", *TINY]
    _, elman, _ = _cli(capsys, *base)
    _, named, _ = _cli(capsys, *base, "--cell", "elman")
    rc, gru, _ = _cli(capsys, *base, "--cell", "gru")
    assert rc == 0 and named.splitlines()[-1] == elman.splitlines()[-1] != gru.splitlines()[-1]


def test_cli_series_help_gives_the_batch_default_it_uses(capsys):
    with pytest.raises(SystemExit):
        _cli(capsys, "series", "--help")
    assert "parallel streams (default: 1)" in capsys.readouterr().out


# ---------------------------------------------------------------- the library function the command calls


def test_series_experiment_returns_what_the_command_prints(capsys):
    from kfrtrl import experiments

    setup = experiments.Setup(hidden=3, batch=1, steps=40, lr=1e-2, backend="numpy")      # the command's lr
    calls = []
    result = experiments.series(synthetic="lgss", estimators=["rtrl", "kf"], setup=setup, lr_tau=10, lr_rho=0.75,
                                progress=lambda done, total, text: calls.append((done, total, text)))
    _, out, _ = _cli(capsys, "series", "--synthetic", "lgss", "--estimator", "rtrl,kf", "--lr-tau", "10",
                     "--lr-rho", "0.75", *TINY)
    assert [r["estimator"] for r in result["rows"]] == ["rtrl", "kf"]
    assert out.splitlines()[-1] == " ".join(f"{k} {result['rows'][1][k]:.5g}" for k in
                                            ["mse", "ratio_naive", "ratio_const", "ratio_optimal"]) + " estimator kf"
    assert result["data"] in out.splitlines()[0] and result["optimal"] == synthetic.kalman_mse(
        synthetic.lgss_model(3, 100.0, 1.0, rng=np.random.default_rng(0).spawn(5)[4]))
    steps, mse = result["curves"]["kf"]
    assert list(steps) == list(range(1, 41)) and mse.shape == (40,)
    assert calls[-1][:2] == (40, 40) and calls[-1][2].startswith("kf mse ")


def test_series_experiment_on_an_array_equals_the_same_table_from_a_csv(tmp_path):
    from kfrtrl import experiments

    data = synthetic.lob(80, rng=1)
    path = tmp_path / "lob.csv"
    np.savetxt(path, data, delimiter=",", fmt="%.17g")
    setup = experiments.Setup(hidden=3, batch=2, steps=50, backend="numpy")
    a = experiments.series(data, target=0, inputs=[2, 3], setup=setup, estimators=["uoro"], optimizer="kalman")
    b = experiments.series(str(path), target="0", inputs="2,3", setup=setup, estimators=["uoro"], optimizer="kalman")
    for ra, rb in zip(a["rows"], b["rows"]):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}
    assert a["rows"][0]["estimator"] == "uoro+kalman" and a["optimal"] is None and "lob.csv" in b["data"]


@pytest.mark.parametrize("kwargs, match", [
    ({}, "data, synthetic: expected exactly one"),
    ({"data": np.ones((5, 2)), "synthetic": "lgss"}, "data, synthetic: expected exactly one"),
    ({"data": np.ones((5, 2))}, "target: expected the target column"),
    ({"data": np.ones((5, 2)), "target": 2}, "target: expected column names or indices among indices 0..1"),
    ({"synthetic": "arma"}, "synthetic: expected one of"),
    ({"synthetic": "lgss", "estimators": ["kf", "rtrl"], "save": "x"}, "estimators: expected one estimator"),
    ({"synthetic": "delay", "length": 1}, "length: expected an integer >= 2"),
])
def test_series_experiment_bad_arguments_are_named(kwargs, match):
    from kfrtrl import experiments

    with pytest.raises(ValueError, match=match):
        experiments.series(**kwargs)


def test_series_experiment_trains_the_setup_dtype():
    from kfrtrl import experiments

    setup = experiments.Setup(hidden=3, batch=1, steps=20, lr=1e-2, dtype="float32", backend="numpy")
    row = experiments.series(synthetic="delay", estimators=["kf"], setup=setup)["rows"][0]
    assert np.isfinite(row["mse"])


def test_synthetic_generate_by_name_stacks_the_streams():
    table, names, target, inputs, model, what = synthetic.generate("lob", 2, 30, rng=0)
    assert table.shape == (2, 30, 5) and names == list(synthetic.LOB_COLUMNS) and target == "mid_change"
    assert synthetic.generate("delay", 3, 10, rng=0)[0].shape == (3, 10, 2)
    with pytest.raises(ValueError, match="name: expected one of"):
        synthetic.generate("arma", 1, 10)
