"""Curve logs, periodic atomic checkpoints and resumed runs that continue the same curve."""
import json

import numpy as np
import pytest

import kfrtrl
from kfrtrl import longrun, tasks, train


def _copy_run(seed=0):
    cell = kfrtrl.RHN(4, 5, dtype=np.float32, rng=seed, candidate="sigmoid")
    est = kfrtrl.OK(cell, rank=2, batch_size=3, rng=seed + 1)
    trainer = train.Trainer(est, 4, lr=1e-2, rng=seed + 2, clip_scope="cell")
    task = tasks.CopyTask(3, tasks.Curriculum(threshold=1.5, start_value=1.0), rng=seed + 3, dtype=np.float32,
                          check="sequence_end")
    return trainer, task


def _observe(trainer, task):
    return {"T_cur": task.T_cur, "running_loss": task.curriculum.running_loss}


class _Killed(Exception):
    pass


def _kill_at(step):
    def callback(done):
        if done == step:
            raise _Killed
    return callback


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_killed_run_resumes_from_its_checkpoint_and_continues_the_same_curve(tmp_path, suffix):
    whole, piece, ckpt = tmp_path / f"whole{suffix}", tmp_path / f"piece{suffix}", tmp_path / "run.ckpt"
    trainer, task = _copy_run()
    with longrun.CurveLog(whole, ["T_cur", "running_loss"]) as log:
        longrun.train_to(trainer, task, 60, _observe, log, log_every=5)
    trainer, task = _copy_run()                          # the same run, killed at step 47
    with pytest.raises(_Killed), longrun.CurveLog(piece, ["T_cur", "running_loss"]) as log:
        longrun.train_to(trainer, task, 60, _observe, log, log_every=5, checkpoint=ckpt, save_every=20,
                         callback=_kill_at(47))
    assert longrun.read_curve(piece)[-1]["step"] == 45
    trainer, task = _copy_run()
    train.load_checkpoint(ckpt, trainer, task)
    assert trainer.steps == 40                           # the last checkpoint before the kill
    with longrun.CurveLog(piece, ["T_cur", "running_loss"], resume_step=trainer.steps) as log:
        longrun.train_to(trainer, task, 60, _observe, log, log_every=5, checkpoint=ckpt, save_every=20)
    a, b = longrun.read_curve(whole), longrun.read_curve(piece)
    assert [r["step"] for r in b] == list(range(5, 65, 5))
    assert [(r["T_cur"], r["running_loss"]) for r in a] == [(r["T_cur"], r["running_loss"]) for r in b]
    assert len({r["T_cur"] for r in a}) > 1              # the curriculum moved: the curve is not flat
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run.ckpt"]


def test_resume_drops_the_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "c.csv"
    with longrun.CurveLog(path, ["bpc"]) as log:
        for step in range(10, 60, 10):
            log.write(step, step / 10, bpc=1.0 / step)
    with longrun.CurveLog(path, ["bpc"], resume_step=30) as log:
        assert log.seconds == 3.0
        log.write(40, 4.5, bpc=0.5)
    rows = longrun.read_curve(path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40] and rows[-1] == {"step": 40, "bpc": 0.5, "seconds": 4.5}
    assert path.read_text().splitlines()[0] == "step,bpc,seconds"
    with longrun.CurveLog(path, ["bpc"]):               # no resume_step: a new log
        pass
    assert longrun.read_curve(path) == []


def test_json_lines_log_and_bad_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    with longrun.CurveLog(path, ["T_cur"]) as log:
        log.write(5, 0.25, T_cur=2)
        with pytest.raises(ValueError, match=r"missing \['T_cur'\]"):
            log.write(6, 0.3)
    assert json.loads(path.read_text()) == {"step": 5, "T_cur": 2, "seconds": 0.25}
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="log: expected a kfrtrl curve log"):
        longrun.read_curve(path)
