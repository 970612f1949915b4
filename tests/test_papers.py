"""The OK authors' copy configuration as options, and the reference figures kept with their source."""
import math

import numpy as np
import pytest

import kfrtrl
from kfrtrl import papers, plotting, tasks, train


def test_curriculum_starts_at_start_value_and_resets_to_reset_value():
    cur = tasks.Curriculum(start_value=1.0)
    assert cur.running_loss == 1.0
    k = math.ceil(math.log(0.15) / math.log(0.999))     # from 1 bit with zero loss
    advanced = [cur.update(0.0) for _ in range(k)]
    assert advanced == [False] * (k - 1) + [True]
    assert cur.T_cur == 2 and cur.running_loss == 0.3
    assert tasks.Curriculum().running_loss == 0.3       # the default start is the reset value
    with pytest.raises(ValueError, match="start_value"):
        tasks.Curriculum(start_value=-1.0)


def test_curriculum_update_without_check_only_averages():
    cur = tasks.Curriculum(threshold=10.0)
    assert not cur.update(0.5, check=False) and cur.T_cur == 1
    assert cur.running_loss == pytest.approx(0.999 * 0.3 + 0.001 * 0.5)
    assert cur.update(0.5) and cur.T_cur == 2


@pytest.mark.parametrize("check", ["step", "sequence_end"])
def test_copy_task_compares_t_cur_when_a_sequence_ends(check):
    # threshold 10 bits: the average is always below it, so T_cur advances at every comparison
    task = tasks.CopyTask(3, tasks.Curriculum(threshold=10.0), rng=0, check=check)
    advanced, resets = [], []
    for _ in range(200):
        _, _, reset = task.next()
        resets.append(reset.any())
        advanced.append(task.observe(np.zeros(3)))
    ended = resets[1:]                                   # a stream restarting at t+1 ended its sequence at t
    if check == "step":
        assert all(advanced)
    else:
        assert advanced[:-1] == ended and 0 < sum(ended) < len(ended)
    with pytest.raises(ValueError, match="check: expected one of"):
        tasks.CopyTask(check="always")


def _sgd_trainer(**kw):
    cell = kfrtrl.Elman(3, 5, rng=0)
    est = kfrtrl.RTRL(cell, batch_size=2)
    return train.Trainer(est, 4, optimizer="sgd", lr=1.0, rng=1, **kw)


def _one_update(trainer):
    before = {k: v.copy() for k, v in trainer._params().items()}
    x = np.random.default_rng(2).standard_normal((2, 3))
    trainer.step(x, np.array([1, 3]))
    return {k: before[k] - v for k, v in trainer._params().items()}   # = the applied gradient (SGD, lr 1)


def test_clip_scope_cell_clips_the_cell_gradient_and_leaves_the_readout():
    raw = _one_update(_sgd_trainer(clip=None))
    cell_only = _one_update(_sgd_trainer(clip=1e-3, clip_scope="cell"))
    both = _one_update(_sgd_trainer(clip=1e-3))
    np.testing.assert_allclose(cell_only["readout.W"], raw["readout.W"], rtol=1e-12)
    cell_norm = np.sqrt(sum(np.sum(g * g) for k, g in raw.items() if k.startswith("cell.")))
    assert cell_norm > 1e-2
    np.testing.assert_allclose(cell_only["cell.W"], raw["cell.W"] * (1e-3 / cell_norm), rtol=1e-9)
    total = np.sqrt(sum(np.sum(g * g) for g in both.values()))
    assert total == pytest.approx(1e-3, rel=1e-9)
    with pytest.raises(ValueError, match="clip_scope: expected one of"):
        _sgd_trainer(clip_scope="readout")


def test_init_normal_draws_every_array_in_place_from_n0_std2():
    cell = kfrtrl.RHN(4, 100, dtype=np.float32, rng=0, candidate="sigmoid")
    trainer = train.Trainer(kfrtrl.UORO(cell), 4, rng=1)
    params = {**cell.params(), "readout": trainer.readout.W}
    live = {k: id(v) for k, v in params.items()}
    papers.init_normal(params, 0.01, rng=5)
    W = cell.params()["W"]
    assert id(W) == live["W"] and W.dtype == np.float32
    assert np.std(W) == pytest.approx(0.01, rel=0.02) and abs(np.mean(W)) < 1e-3
    assert np.all(W[:, -1] != 0.0) and np.all(trainer.readout.W[:, -1] != 0.0)   # biases drawn too
    again = {k: np.zeros_like(v) for k, v in params.items()}
    papers.init_normal(again, 0.01, rng=5)
    for k in params:
        np.testing.assert_array_equal(again[k], params[k])
    with pytest.raises(ValueError, match="std"):
        papers.init_normal(params, -0.1)


def test_reference_figures_and_band_check():
    steps = sorted(papers.OK_COPY_T_CUR)
    assert steps[0] == 10_000 and papers.OK_COPY_T_CUR[10_000] == (4, 4)
    lows, highs = zip(*(papers.OK_COPY_T_CUR[s] for s in steps))
    assert list(lows) == sorted(lows) and all(lo <= hi for lo, hi in zip(lows, highs))
    assert papers.OK_PTB_BPC[50_000] == 2.31 and "Optimal Kronecker-Sum" in papers.SOURCE
    assert papers.band(20_000) == (7, 8) and papers.band(15_000) is None
    check = papers.within_or_above({10_000: 4, 20_000: 6, 30_000: 9})
    assert check == {10_000: (4, 4, 4, True), 20_000: (6, 7, 8, False)}


def test_copy_band_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "c.png"
    plotting.copy_band(str(path), {"run": (np.array([0, 5000, 10000]), np.array([1, 3, 5]))}, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
