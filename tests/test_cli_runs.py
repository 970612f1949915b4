"""The training commands' model options (--cell, --depth, --dtype, --init-std, --faithful), curve log,
periodic checkpoints and a killed run resumed on the same curve, at tiny sizes."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kfrtrl
from kfrtrl import checkpoint, longrun
from kfrtrl.cli import main

TINY = ["--hidden", "4", "--batch", "2", "--backend", "numpy"]


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _checkpoint(path):
    return checkpoint.load(path)[0]["trainer"]


@pytest.mark.parametrize("cell,extra", [("elman", []), ("rhn", ["--depth", "2"]), ("lstm", []), ("gru", [])])
def test_copy_runs_every_cell_in_either_dtype(capsys, tmp_path, cell, extra):
    ck = tmp_path / "c.ckpt"
    rc, out, _ = _cli(capsys, "copy", "--cell", cell, *extra, "--dtype", "float32", "--estimator", "ok:2", *TINY,
                      "--steps", "6", "--save", ck)
    assert rc == 0 and out.splitlines()[-1] == "T_cur 1"
    state = _checkpoint(ck)
    assert state["cell"]["class"] == {"elman": "Elman", "rhn": "RHN", "lstm": "LSTM", "gru": "GRU"}[cell]
    assert all(W.dtype == np.float32 for W in state["cell"]["params"].values())
    if cell == "rhn":
        assert sorted(state["cell"]["params"]) == ["W0", "W1"] and state["cell"]["config"]["candidate"] == "tanh"


def test_init_std_draws_every_weight_and_faithful_sets_the_authors_details(capsys, tmp_path):
    ck = tmp_path / "c.ckpt"
    rc, _, _ = _cli(capsys, "copy", "--cell", "rhn", "--hidden", "24", "--batch", "2", "--backend", "numpy",
                    "--steps", "1", "--lr", "1e-12", "--init-std", "0.01", "--faithful", "--save", ck)
    state = _checkpoint(ck)
    W, R = state["cell"]["params"]["W"], state["readout"]
    assert rc == 0 and np.std(W) == pytest.approx(0.01, rel=0.1) and np.std(R) == pytest.approx(0.01, rel=0.3)
    assert np.all(W[:, -1] != 0) and np.all(R[:, -1] != 0)             # biases drawn too
    assert state["cell"]["config"]["candidate"] == "sigmoid"
    default = tmp_path / "d.ckpt"
    _cli(capsys, "copy", "--cell", "rhn", "--hidden", "24", "--batch", "2", "--backend", "numpy", "--steps", "1",
         "--lr", "1e-12", "--save", default)
    assert np.all(abs(_checkpoint(default)["cell"]["params"]["W"][:, -1]) < 1e-11)  # own init: zero biases (+ 1 step)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_log_has_a_row_per_percent_of_the_steps(capsys, tmp_path, suffix):
    log = tmp_path / f"curve{suffix}"
    rc, out, _ = _cli(capsys, "copy", *TINY, "--steps", "200", "--log", log, "--plot", tmp_path / "c.png")
    rows = longrun.read_curve(log)
    assert rc == 0 and [r["step"] for r in rows] == list(range(2, 202, 2))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"     # the log's curve beside the authors' band
    assert set(rows[0]) == {"step", "T_cur", "running_loss", "seconds"} and rows[-1]["T_cur"] == 1
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(rows, rows[1:]))
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd" * 20, encoding="utf-8")
    rc, _, _ = _cli(capsys, "charlm", text, "--cell", "gru", *TINY, "--steps", "10", "--log", log)
    assert rc == 0 and [sorted(r) for r in longrun.read_curve(log)][0] == ["seconds", "step", "train_bpc"]


def test_log_valid_adds_the_validation_bpc_and_leaves_training_unchanged(capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    argv = ["charlm", text, "--estimator", "kf", *TINY, "--steps", "100", "--valid-chars", "60"]
    rc, plain, _ = _cli(capsys, *argv, "--log", tmp_path / "plain.csv")
    rc2, out, _ = _cli(capsys, *argv, "--log", tmp_path / "valid.csv", "--log-valid")
    plain_rows, rows = longrun.read_curve(tmp_path / "plain.csv"), longrun.read_curve(tmp_path / "valid.csv")
    assert rc == rc2 == 0 and [r["train_bpc"] for r in rows] == [r["train_bpc"] for r in plain_rows]
    assert out.splitlines()[-1] == plain.splitlines()[-1]              # the same final validation bpc
    corpus = kfrtrl.tasks.load_corpus(text)
    assert corpus.valid.size > 60 and float(out.split()[-1]) == pytest.approx(rows[-1]["valid_bpc"], abs=5e-5)
    assert len({r["valid_bpc"] for r in rows}) > 10                     # evaluated at every log point
    row = kfrtrl.experiments.charlm(corpus, "kf", kfrtrl.experiments.Setup(hidden=4, batch=2, steps=20, lr=3e-3,
                                    backend="numpy"), valid_chars=60, log_valid=True)
    assert row["curve"][1][-1] == row["valid bpc"] and row["train bpc"] == next(r["train_bpc"] for r in rows if r["step"] == 20)


def test_compare_logs_each_estimator_and_noise_takes_a_cell(capsys, tmp_path):
    rc, _, _ = _cli(capsys, "compare", "--estimators", "kf,ok:2", "--cell", "rhn", *TINY, "--steps", "4",
                    "--log", tmp_path / "c.csv")
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["c.kf.csv", "c.ok-2.csv"]
    rc, out, _ = _cli(capsys, "noise", "--sizes", "3", "--estimators", "ok:1", "--chains", "4", "--steps", "6",
                      "--burn-in", "2", "--backend", "numpy", "--cell", "rhn", "--dtype", "float32",
                      "--init-std", "0.1")
    assert rc == 0 and out.splitlines()[-1].split()[:2] == ["ok:1", "3"]


def _copy_argv(tmp_path, steps):
    return ["copy", "--estimator", "ok:2", "--cell", "rhn", "--faithful", "--hidden", "4", "--batch", "2",
            "--backend", "numpy", "--lr", "0.03", "--steps", str(steps), "--save", str(tmp_path / "run.ckpt"),
            "--save-every", "100", "--log", str(tmp_path / "run.csv")]


def test_killed_run_resumes_and_continues_the_same_curve(capsys, tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    assert main(_copy_argv(whole, 1500)) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(kfrtrl.__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "kfrtrl", *_copy_argv(tmp_path, 1500)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run.ckpt").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL          # killed mid-run, after its first checkpoint
    saved = _checkpoint(tmp_path / "run.ckpt")["steps"]
    killed = [r for r in longrun.read_curve(tmp_path / "run.csv") if r["step"] <= saved]
    assert saved % 100 == 0 and saved < 1500 and killed
    rc, out, _ = _cli(capsys, *_copy_argv(tmp_path, 1500), "--resume", tmp_path / "run.ckpt")
    a, b = longrun.read_curve(whole / "run.csv"), longrun.read_curve(tmp_path / "run.csv")
    assert b[:len(killed)] == killed                     # the rows before the checkpoint are kept, times and all
    assert rc == 0 and [r["step"] for r in b] == list(range(15, 1515, 15))
    assert [(r["T_cur"], r["running_loss"]) for r in a] == [(r["T_cur"], r["running_loss"]) for r in b]
    assert len({r["running_loss"] for r in a}) == len(a)  # the curve moves all along
    W = [_checkpoint(d / "run.ckpt")["cell"]["params"]["W"] for d in (whole, tmp_path)]
    np.testing.assert_array_equal(W[0], W[1])


@pytest.mark.parametrize("argv,match", [
    (["copy", "--cell", "elman", "--depth", "2"], "--depth: only --cell rhn"),
    (["copy", "--save-every", "5"], "--save-every: needs --save PATH"),
    (["copy", "--init-std", "-1"], "--init-std"),
    (["copy", "--cell", "rnn"], "--cell"),
    (["copy", "--cell", "rhn3", "--depth", "2"], "--depth: only --cell rhn"),
    (["charlm", "FILE", "--dtype", "float16"], "--dtype"),
    (["noise", "--cell", "gru", "--depth", "3"], "--depth: only --cell rhn"),
])
def test_bad_model_flags_are_one_line_and_exit_code_2(capsys, tmp_path, argv, match):
    (tmp_path / "t.txt").write_text("abcabc" * 5, encoding="utf-8")
    argv = [str(tmp_path / "t.txt") if a == "FILE" else a for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1


def test_resume_needs_steps_beyond_the_checkpoint(capsys, tmp_path):
    ck = tmp_path / "c.ckpt"
    _cli(capsys, "copy", *TINY, "--steps", "5", "--save", ck)
    rc, _, err = _cli(capsys, "copy", *TINY, "--steps", "5", "--resume", ck)
    assert rc != 0 and "steps: expected more than the checkpoint's 5 steps, got 5" in err


def test_validation_burn_in_runs_each_chunk_over_the_text_before_it(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. a dog ran. " * 30, encoding="utf-8")
    corpus = kfrtrl.tasks.load_corpus(text)
    setup = kfrtrl.experiments.Setup(hidden=4, batch=2, steps=30, backend="numpy")
    trainer = kfrtrl.experiments.build_trainer(setup, "kf", len(corpus.vocab))
    B, K, ids = 3, 7, corpus.valid[:61]
    T = 60 // B
    full = np.concatenate([corpus.train, corpus.valid])
    total = 0.0
    for b in range(B):                                   # each chunk alone, warmed on the K characters before it
        first = len(corpus.train) + b * T
        s = trainer.cell.initial_state(1)
        for i in range(first - K, first + T):
            s, _ = trainer.cell.forward(s, kfrtrl.tasks.one_hot(full[i:i + 1], len(corpus.vocab), s.dtype))
            if i >= first:
                total += float(trainer.readout.loss_bits(s[:, trainer.cell.out], full[i + 1:i + 2])[0])
    bpc = kfrtrl.tasks.validation_bpc(trainer, corpus, batch_size=B, max_chars=61, burn_in=K)
    assert bpc == pytest.approx(total / (B * T), rel=1e-12)
    assert bpc != kfrtrl.tasks.validation_bpc(trainer, corpus, batch_size=B, max_chars=61)
    with pytest.raises(ValueError, match="burn_in: a state reset every 5 characters"):
        kfrtrl.tasks.validation_bpc(trainer, corpus, reset_every=5, burn_in=K)
    with pytest.raises(ValueError, match="burn_in: expected at most the training text's"):
        kfrtrl.tasks.validation_bpc(trainer, corpus, burn_in=len(corpus.train) + 1)
