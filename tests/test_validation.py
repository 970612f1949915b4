"""Arguments that used to be accepted silently, or refused with a misleading message."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import kfrtrl
from kfrtrl import tasks, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def _estimator():
    return kfrtrl.UORO(kfrtrl.Elman(2, 3, rng=0), backend="numpy")


@pytest.mark.parametrize("make, exc, match", [
    (lambda: train.Trainer(_estimator(), 2, clip=0), ValueError, r"clip: expected a real number in \(0.0, inf\], got 0"),
    (lambda: train.Trainer(_estimator(), 2, clip=-1.0), ValueError, r"clip: .*got -1.0"),
    (lambda: train.Trainer(_estimator(), 2, lr=0), ValueError, r"lr: expected a real number in \(0.0, inf\), got 0"),
    (lambda: train.Trainer(_estimator(), 2, lr=0.0, optimizer="sgd"), ValueError, r"lr: .*\(0.0, inf\), got 0.0"),
    (lambda: train.Trainer(_estimator(), 2, lr=np.inf), ValueError, r"lr: .*got inf"),
    (lambda: train.Trainer(_estimator(), 2, lr=np.nan), ValueError, r"lr: .*got nan"),
    (lambda: train.Adam(beta1=1.0), ValueError, r"beta1: expected a real number in \[0.0, 1.0\), got 1.0"),
    (lambda: train.Adam(beta2=1.0), ValueError, r"beta2: expected a real number in \[0.0, 1.0\)"),
    (lambda: kfrtrl.Elman(2, 3, alpha=0), ValueError, r"alpha: expected a real number in \(0.0, 1.0\], got 0$"),
    (lambda: kfrtrl.Elman(2, 3, alpha=2), ValueError, r"alpha: expected a real number in \(0.0, 1.0\], got 2$"),
    (lambda: kfrtrl.OK(kfrtrl.Elman(4, 8), rank=1000), ValueError,
     r"rank: expected an integer in \[1, 13\] \(no influence of this Elman has a higher Kronecker rank\), got 1000"),
    (lambda: tasks.Curriculum(decay=1.0), ValueError, r"decay: expected a real number in \[0.0, 1.0\), got 1.0"),
])
def test_out_of_range_arguments_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_ok_rank_bound_is_the_largest_kronecker_rank():
    """Elman(4, 8): W is 8 × 13, G a (8·8) × 13 matrix: rank 13 is accepted, 14 is not; the LSTM's
    W (32 × 13) with 16 state units allows 13 too."""
    assert kfrtrl.OK(kfrtrl.Elman(4, 8, rng=0), rank=13, backend="numpy").rank == 13
    with pytest.raises(ValueError, match=r"\[1, 13\]"):
        kfrtrl.OK(kfrtrl.Elman(4, 8, rng=0), rank=14)
    with pytest.raises(ValueError, match=r"\[1, 13\].*LSTM"):
        kfrtrl.OK(kfrtrl.LSTM(4, 8, rng=0), rank=14)


def test_corpus_that_is_a_directory_or_not_utf8(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected a UTF-8 text file, got '.*' \(a directory\)"):
        tasks.load_corpus(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 3)
    with pytest.raises(ValueError, match=r"expected a UTF-8 text file, got '.*latin1.txt' \(byte 3 is not UTF-8: b'\\xe9'\)"):
        tasks.load_corpus(latin1)


# ---- the kfrtrl command: one line, exit code 2

TINY = ["--hidden", "3", "--batch", "2", "--steps", "6", "--backend", "numpy"]


def _run(capsys, *argv):
    """-> (exit code, stdout, stderr) of ``kfrtrl argv`` (argparse errors and returned codes alike)."""
    from kfrtrl.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, match", [
    (["copy", "--seed", "-1"], r"--seed: expected an integer >= 0, got -1"),
    (["noise", "--chains", "1"], r"--chains: expected an integer >= 2 \(a variance needs two chains\), got 1"),
    (["copy", "--estimator", "uoro", "--rank", "2"], r"--rank applies to an estimator taking a rank without ':k', got uoro"),
    (["copy", "--estimator", "ok:3", "--rank", "2"], r"--rank applies to .*got ok:3"),
    (["noise", "--estimators", "kf,uoro", "--rank", "2"], r"--rank applies to .*got kf,uoro"),
    (["compare", "--task", "copy", "--reset-every", "3"], r"--reset-every applies to --task charlm, got --task copy"),
    (["compare", "--task", "copy", "--file", "TEXT"], r"--file applies to --task charlm"),
    (["compare", "--task", "copy", "--log-valid"], r"--log-valid applies to --task charlm, got --task copy"),
    (["compare", "--task", "copy", "--valid-burn-in", "5"], r"--valid-burn-in applies to --task charlm"),
    (["charlm", "TEXT", "--valid-burn-in", "-1"], r"--valid-burn-in: expected an integer >= 0, got -1"),
    (["charlm", "DIR"], r"\(a directory\)"),
])
def test_bad_or_inapplicable_options_exit_2_with_one_line(capsys, tmp_path, argv, match):
    (tmp_path / "t.txt").write_text("abcabcabd" * 20, encoding="utf-8")
    argv = [{"TEXT": str(tmp_path / "t.txt"), "DIR": str(tmp_path)}.get(a, a) for a in argv]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err


def test_one_chain_is_refused_on_every_path_to_the_noise_experiment(capsys, tmp_path):
    """The chain count is checked by the library, so ``kfrtrl sweep noise --set chains=1`` is refused too."""
    from kfrtrl import experiments, sweep

    message = "chains: expected an integer >= 2, got 1"
    with pytest.raises(ValueError, match=f"^{message}$"):
        experiments.noise(["uoro"], sizes=[4], chains=1, steps=12, burn_in=4, every=4)
    with pytest.raises(ValueError, match=f"^{message}$"):
        sweep.run_one(sweep.grid("noise", ["uoro"], [0], hidden=4, chains=1, steps=12, burn_in=4, every=4)[0])
    out = tmp_path / "runs.jsonl"
    code, _, err = _run(capsys, "sweep", "noise", "--estimators", "uoro", "--set", "chains=1", "--hidden", "4",
                        "--steps", "12", "--set", "burn_in=4", "--set", "every=4", "--jobs", "1", "--out", str(out))
    assert code == 2 and err.strip().splitlines()[-1] == f"kfrtrl sweep: error: {message}"
    assert "Traceback" not in err and not (out.exists() and out.read_text())


def test_resume_from_a_bad_file_or_with_other_options(capsys, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = _run(capsys, "copy", "--estimator", "kf", *TINY, "--resume", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.ckpt" in err and "corrupt" in err
    good = tmp_path / "good.ckpt"
    assert _run(capsys, "copy", "--estimator", "kf", *TINY, "--save", str(good))[0] == 0
    code, _, err = _run(capsys, "copy", "--estimator", "kf", *TINY, "--lr", "0.01", "--seed", "3",
                        "--resume", str(good))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "lr: 0.01 here, 0.001 in the checkpoint" in err and "seed: 3 here, 0 in the checkpoint" in err
    assert _run(capsys, "copy", "--estimator", "kf", *TINY, "--steps", "9", "--resume", str(good))[0] == 0


def test_a_closed_pipe_ends_the_command_quietly():
    """``kfrtrl info | head -1``: no traceback, no 'Broken pipe' message; the SIGPIPE exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "kfrtrl", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    proc.stdout.close()                          # the reader is gone before anything is written
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait() == 141 and err == b""
