"""The online training loop: exact readout/loss gradients, optimizers, learning, checkpoint/resume."""
import pathlib
import re

import numpy as np
import pytest

import kfrtrl
from kfrtrl import checkpoint, tasks, train

SPECS = ["rtrl", "uoro", "nobacktrack", "kf:2", "ok:2", "tbptt:4"]


def _numerical_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f()
        x[idx] = old - eps
        down = f()
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def test_softmax_xent_and_readout_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    readout = train.Readout(5, 3, rng=1)
    readout.W[:, -1] = rng.standard_normal(3)
    h = rng.standard_normal((4, 5))
    y = np.array([0, 2, 1, 2])

    def total():
        return float(np.sum(train.softmax_xent(readout(h), y)[0]))

    loss, dlogits = train.softmax_xent(readout(h), y)
    gW, dh = readout.backward(h, dlogits)
    np.testing.assert_allclose(gW, _numerical_grad(total, readout.W), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dh, _numerical_grad(total, h), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(readout.loss_bits(h, y), loss / np.log(2.0))


def test_squared_error_gradient():
    rng = np.random.default_rng(1)
    out, y = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    loss, grad = train.squared_error(out, y)
    np.testing.assert_allclose(grad, _numerical_grad(lambda: float(np.sum(train.squared_error(out, y)[0])), out),
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(loss, 0.5 * np.sum((out - y) ** 2, axis=1))


def test_adam_first_step_is_lr_times_sign_and_sgd_step():
    p = {"w": np.array([1.0, -2.0, 0.5])}
    g = {"w": np.array([0.3, -4.0, 0.0])}
    train.Adam(lr=0.01, eps=0.0).update(p, {"w": g["w"] + np.array([0, 0, 1e-3])})
    np.testing.assert_allclose(p["w"], [0.99, -1.99, 0.49], rtol=1e-12)
    train.SGD(lr=0.5).update(p, g)
    np.testing.assert_allclose(p["w"], [0.84, 0.01, 0.49], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_equals_the_textbook_update_over_steps(dtype):
    """Five Adam steps in place against Kingma & Ba's update written out (changing rates, a
    gradient of another dtype, a zero gradient entry)."""
    rng = np.random.default_rng(3)
    p = {"w": rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}
    want = {k: v.astype(np.float64) for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in want.items()}
    v2 = {k: np.zeros_like(v) for k, v in want.items()}
    opt = train.Adam(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-6)
    for t in range(1, 6):
        g = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(5).astype(dtype)}
        g["b"][0] = 0.0
        lr = 0.05 / t
        opt.update(p, g, lr)
        for k in want:
            m[k] = 0.8 * m[k] + 0.2 * g[k]
            v2[k] = 0.95 * v2[k] + 0.05 * g[k].astype(np.float64) ** 2
            want[k] -= lr * (m[k] / (1 - 0.8 ** t)) / (np.sqrt(v2[k] / (1 - 0.95 ** t)) + 1e-6)
    for k in want:
        assert p[k].dtype == dtype
        np.testing.assert_allclose(p[k], want[k], rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-12)


def test_clip_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert train.clip_global_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"], [[0.8]])
    assert train.clip_global_norm(grads, 2.0) == pytest.approx(1.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])


def test_trainer_gradient_equals_bptt_of_the_whole_loss():
    """RTRL inside the trainer, one SGD update (lr 1) after T steps = mean BPTT gradient of the total loss."""
    T, B, n, d, C = 6, 3, 5, 3, 4
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((T, B, d))
    ys = rng.integers(0, C, size=(T, B))
    cell = kfrtrl.Elman(d, n, alpha=0.8, rng=3)
    W0 = cell.W.copy()
    trainer = train.Trainer(kfrtrl.RTRL(cell, batch_size=B, backend="numpy"), C, optimizer="sgd", lr=1.0,
                            clip=None, update_every=T, rng=4)
    R = trainer.readout.W.copy()
    hs, dl_dhs = [], []
    for t in range(T):
        trainer.step(xs[t], ys[t])
        hs.append(trainer.estimator.state.copy())
        _, dlogits = train.softmax_xent(hs[-1] @ R[:, :-1].T + R[:, -1], ys[t])
        dl_dhs.append(dlogits @ R[:, :-1])
    assert not np.array_equal(cell.W, W0)
    exact = kfrtrl.bptt(kfrtrl.Elman(d, n, alpha=0.8, rng=3), xs, np.array(dl_dhs))["W"] / (B * T)
    np.testing.assert_allclose(W0 - cell.W, exact, rtol=1e-10, atol=1e-13)


def test_update_every_k_leaves_parameters_until_the_kth_step():
    cell = kfrtrl.Elman(4, 5, rng=0)
    trainer = train.Trainer(kfrtrl.UORO(cell, rng=0, backend="numpy"), 4, update_every=3, rng=0)
    W0 = cell.W.copy()
    x = np.eye(4)[[1]]
    for _ in range(2):
        trainer.step(x, np.array([2]))
    assert np.array_equal(cell.W, W0)
    trainer.step(x, np.array([2]))
    assert not np.array_equal(cell.W, W0)


def test_reset_mask_zeroes_only_the_masked_samples():
    cell = kfrtrl.Elman(4, 5, rng=0)
    est = kfrtrl.KFRTRL(cell, batch_size=2, rng=0, backend="numpy")
    trainer = train.Trainer(est, 4, update_every=10, rng=0)   # no update within the test
    x = np.eye(4)[[1, 1]]
    trainer.step(x, np.array([0, 0]))
    trainer.step(x, np.array([0, 0]), reset=np.array([False, True]))
    h_fresh = kfrtrl.Elman(4, 5, rng=0).forward(np.zeros((1, 5)), x[:1])[0]
    np.testing.assert_allclose(est.state[1], h_fresh[0])
    assert not np.allclose(est.state[0], h_fresh[0])


PERIODIC = np.array([0, 0, 1, 1])                # after a 0 (or a 1) comes either symbol: the one before decides


def _train_periodic(spec, zero_cell_gradient=False, steps=400):
    """Train on the sequence 0,0,1,1,0,0,... (two streams, half a period apart) from a cell whose
    recurrent weights start at zero (no memory until the cell learns one); -> per-step losses."""
    cell = kfrtrl.Elman(2, 6, rng=0)
    cell.W[:, :6] = 0.0
    est = train.make_estimator(spec, cell, batch_size=2, rng=1, backend="numpy")
    if zero_cell_gradient:
        est.gradient = lambda dl_dh: {k: np.zeros(shape, dl_dh.dtype) for k, shape in cell.param_shapes().items()}
    trainer = train.Trainer(est, 2, lr=0.03, rng=2)
    losses = []
    for t in range(steps):
        pos = np.array([t, t + 2]) % 4
        losses.append(np.mean(trainer.step(np.eye(2)[PERIODIC[pos]], PERIODIC[(pos + 1) % 4])))
    return np.array(losses)


@pytest.mark.parametrize("spec", SPECS)
def test_training_learns_a_sequence_that_needs_memory(spec):
    """The next symbol of 0,0,1,1,... depends on the previous one: learnt only through the cell."""
    losses = _train_periodic(spec)
    assert np.mean(losses[-30:]) < 0.01
    assert np.mean(losses[-30:]) < 0.02 * np.mean(losses[:30])


def test_the_periodic_sequence_is_not_learnt_without_the_cells_gradient():
    """The readout alone sees only the current symbol: it stays at 1 bit per step."""
    assert np.mean(_train_periodic("rtrl", zero_cell_gradient=True)[-30:]) > 0.95


def test_float32_training_keeps_the_cells_dtype():
    cell = kfrtrl.Elman(4, 5, rng=0, dtype=np.float32)
    trainer = train.Trainer(kfrtrl.KFRTRL(cell, batch_size=2, rng=0, backend="numpy"), 4, rng=0)
    metrics = train.run(trainer, tasks.CopyTask(2, rng=0, dtype=np.float32), 50)
    assert np.isfinite(metrics["loss"])
    assert cell.W.dtype == trainer.readout.W.dtype == trainer.optimizer.m["cell.W"].dtype == np.float32


def test_mse_loss_learns_a_constant_target():
    cell = kfrtrl.Elman(2, 4, rng=0)
    trainer = train.Trainer(kfrtrl.OK(cell, rank=2, rng=0, backend="numpy"), 2, loss="mse", lr=0.02, rng=0)
    target = np.array([[0.5, -1.5]])
    losses = [trainer.step(np.ones((1, 2)), target)[0] for _ in range(300)]
    assert losses[-1] < 1e-3 * losses[0]
    assert set(trainer.metrics()) == {"loss"}


def _build(spec, seed, B=3):
    cell = kfrtrl.Elman(4, 5, rng=seed)
    est = train.make_estimator(spec, cell, batch_size=B, rng=seed + 1, backend="numpy")
    trainer = train.Trainer(est, 4, lr=3e-3, update_every=2, rng=seed + 2)
    return trainer, tasks.CopyTask(B, curriculum=tasks.Curriculum(T_start=3), rng=seed + 3)


@pytest.mark.parametrize("spec", SPECS)
def test_checkpoint_resume_is_bit_identical(spec, tmp_path):
    path = tmp_path / "run.ckpt"
    trainer, task = _build(spec, 0)
    train.run(trainer, task, 25)  # odd: a gradient is accumulated but not yet applied
    train.save_checkpoint(path, trainer, task)
    train.run(trainer, task, 30)
    resumed, resumed_task = _build(spec, 100)  # other seeds: everything must come from the file
    train.load_checkpoint(path, resumed, resumed_task)
    train.run(resumed, resumed_task, 30)
    assert np.array_equal(trainer.cell.W, resumed.cell.W)
    assert np.array_equal(trainer.readout.W, resumed.readout.W)
    assert trainer.metrics() == resumed.metrics()
    assert task.state_dict()["pos"].tolist() == resumed_task.state_dict()["pos"].tolist()
    assert trainer.estimator.rng.bit_generator.state == resumed.estimator.rng.bit_generator.state


def test_checkpoint_of_charlm_run_resumes_exactly(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question " * 3, encoding="utf-8")
    corpus = tasks.load_corpus(str(text))

    def build(seed):
        cell = kfrtrl.Elman(len(corpus.vocab), 4, rng=seed)
        trainer = train.Trainer(kfrtrl.OK(cell, rank=2, batch_size=2, rng=seed, backend="numpy"),
                                len(corpus.vocab), rng=seed)
        return trainer, tasks.CharLM(corpus, batch_size=2, reset_every=7, rng=seed)

    trainer, task = build(0)
    train.run(trainer, task, 40)
    train.save_checkpoint(tmp_path / "c", trainer, task)
    train.run(trainer, task, 20)
    resumed, resumed_task = build(1)
    train.load_checkpoint(tmp_path / "c", resumed, resumed_task)
    train.run(resumed, resumed_task, 20)
    assert np.array_equal(trainer.cell.W, resumed.cell.W)


def test_checkpoint_configuration_mismatch_is_refused(tmp_path):
    trainer, task = _build("ok:2", 0)
    train.run(trainer, task, 3)
    train.save_checkpoint(tmp_path / "c", trainer, task)
    other, other_task = _build("ok:3", 0)
    with pytest.raises(ValueError, match="rank"):
        train.load_checkpoint(tmp_path / "c", other, other_task)
    other, other_task = _build("kf", 0)
    with pytest.raises(ValueError, match="estimator class"):
        train.load_checkpoint(tmp_path / "c", other, other_task)
    other, other_task = _build("ok:2", 0, B=2)
    with pytest.raises(ValueError, match="batch_size"):
        train.load_checkpoint(tmp_path / "c", other, other_task)
    with pytest.raises(ValueError, match="task"):
        train.load_checkpoint(tmp_path / "c", trainer)


@pytest.mark.parametrize("spec,cls,attr,value", [
    ("ok", kfrtrl.OK, "rank", 3), ("ok:5", kfrtrl.OK, "rank", 5), ("kf:4", kfrtrl.KFRTRL, "n_chains", 4),
    ("tbptt", kfrtrl.TBPTT, "truncation", 25), ("tbptt:7", kfrtrl.TBPTT, "truncation", 7),
    ("uoro", kfrtrl.UORO, "batch_size", 2), ("ok-6", kfrtrl.OK, "rank", 6),
])
def test_make_estimator_specs(spec, cls, attr, value):
    est = train.make_estimator(spec, kfrtrl.Elman(2, 3, rng=0), batch_size=2, rank=3, backend="numpy")
    assert type(est) is cls and getattr(est, attr) == value


@pytest.mark.parametrize("spec,exc,match", [
    ("lstm", ValueError, "estimator"), ("ok:0", ValueError, "ok:k"), ("ok:x", ValueError, "ok:k"),
    ("uoro:2", ValueError, "suffix"), (3, TypeError, "spec"),
])
def test_make_estimator_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        train.make_estimator(spec, kfrtrl.Elman(2, 3, rng=0))


def test_bad_arguments_name_themselves():
    cell = kfrtrl.Elman(2, 3, rng=0)
    with pytest.raises(ValueError, match="rank"):
        train.make_estimator("ok", cell, rank=0)
    est = kfrtrl.UORO(cell, backend="numpy")
    with pytest.raises(ValueError, match="loss"):
        train.Trainer(est, 2, loss="hinge")
    with pytest.raises(ValueError, match="optimizer"):
        train.Trainer(est, 2, optimizer="rmsprop")
    with pytest.raises(ValueError, match="update_every"):
        train.Trainer(est, 2, update_every=0)
    with pytest.raises(TypeError, match="estimator"):
        train.Trainer(cell, 2)
    trainer = train.Trainer(est, 2)
    with pytest.raises(ValueError, match="y: expected integer classes"):
        trainer.step(np.ones((1, 2)), np.array([2]))


def test_readme_training_example_runs_learns_and_checkpoints(tmp_path, monkeypatch):
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("README.md not next to the tests (installed elsewhere)")
    section = readme.read_text().split("## Online training, tasks and diagnostics\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README training example", "exec"), scope)
    assert scope["task"].T_cur >= 2  # the curriculum starts at 1: it learned
    fresh = train.Trainer(train.make_estimator("ok:2", kfrtrl.Elman(4, 16), batch_size=8), n_out=4, lr=3e-3)
    train.load_checkpoint("copy.ckpt", fresh, tasks.CopyTask(batch_size=8))  # the same settings
    assert np.array_equal(fresh.cell.W, scope["cell"].W)


# ---------------------------------------------------------------- the training subcommands of the kfrtrl command

TINY = ["--hidden", "4", "--batch", "2", "--steps", "20", "--backend", "numpy"]


def _cli(capsys, *argv):
    from kfrtrl.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_copy_prints_t_cur_and_plots(capsys, tmp_path):
    rc, out, _ = _cli(capsys, "copy", "--estimator", "ok:2", *TINY, "--plot", str(tmp_path / "c.png"))
    assert rc == 0 and "T_cur 1" in out.splitlines()
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("cell", ["elstm", "lru", "rhn"])
def test_cli_copy_takes_a_cell(capsys, cell):
    rc, out, _ = _cli(capsys, "copy", "--estimator", "rtrl", "--cell", cell, *TINY)
    assert rc == 0 and out.startswith(f"copy task, cell {cell}, hidden 4") and "T_cur 1" in out.splitlines()


def test_cli_charlm_prints_bpc(capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd" * 20, encoding="utf-8")
    rc, out, _ = _cli(capsys, "charlm", str(text), "--estimator", "kf", *TINY, "--reset-every", "5")
    last = out.splitlines()[-1].split()
    assert rc == 0 and last[0] == "bpc" and 0.0 < float(last[1]) < 10.0


def test_cli_resume_continues_the_saved_run(capsys, tmp_path):
    base = ["copy", "--estimator", "uoro", "--hidden", "4", "--batch", "2", "--backend", "numpy"]
    _cli(capsys, *base, "--steps", "30", "--save", str(tmp_path / "full"))
    _cli(capsys, *base, "--steps", "13", "--save", str(tmp_path / "half"))
    _cli(capsys, *base, "--steps", "30", "--resume", str(tmp_path / "half"), "--save", str(tmp_path / "resumed"))
    W = [checkpoint.load(tmp_path / name)[0]["trainer"]["cell"]["params"]["W"] for name in ("full", "resumed")]
    assert np.array_equal(W[0], W[1])


def test_cli_noise_and_compare_tables(capsys):
    rc, out, _ = _cli(capsys, "noise", "--sizes", "3,4", "--estimators", "uoro,ok:2", "--chains", "8", "--steps", "8",
                      "--burn-in", "2", "--backend", "numpy")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["uoro"], ["ok:2"])]
    assert rc == 0 and [(r[0], r[1]) for r in rows] == [("uoro", "3"), ("ok:2", "3"), ("uoro", "4"), ("ok:2", "4")]
    rc, out, _ = _cli(capsys, "compare", "--estimators", "kf,tbptt:3", *TINY)
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[-2:]] == ["kf", "tbptt:3"]


def test_cli_noise_reports_the_bias_of_deterministic_estimators(capsys):
    rc, out, _ = _cli(capsys, "noise", "--sizes", "4", "--estimators", "rtrl,snap1", "--chains", "3", "--steps", "8",
                      "--burn-in", "2", "--backend", "numpy")
    header = next(line for line in out.splitlines() if line.split()[:1] == ["estimator"])
    assert header.split()[9:13] == ["bias", "bias", "floor", "cos"]
    rows = {line.split()[0]: [float(v) for v in line.split()[5:8]] for line in out.splitlines()
            if line.split()[:1] in (["rtrl"], ["snap1"])}
    assert rc == 0 and rows["rtrl"][0] < 1e-7 and rows["rtrl"][2] == pytest.approx(1.0)
    assert rows["snap1"][0] > 1e-3 and rows["snap1"][1] < 1e-12 and rows["snap1"][2] < 1.0


def test_cli_noise_over_time_prints_windows_and_plots_against_t(capsys, tmp_path):
    rc, out, _ = _cli(capsys, "noise", "--sizes", "4", "--estimators", "kf,uoro", "--chains", "6", "--steps", "12",
                      "--burn-in", "0", "--every", "2", "--over-time", "3", "--backend", "numpy",
                      "--plot", str(tmp_path / "t.png"))
    rows = [line.split() for line in out.split("over time: 3 windows")[1].splitlines() if line.split()[:1] in
            (["kf"], ["uoro"])]
    assert rc == 0 and [(r[0], r[2]) for r in rows] == [(e, w) for e in ("kf", "uoro") for w in ("2-4", "6-8", "10-12")]
    assert all(float(r[3]) > 0.0 and float(r[4]) > 0.0 for r in rows)
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    rc, _, err = _cli(capsys, "noise", "--steps", "12", "--burn-in", "0", "--every", "2", "--over-time", "7")
    assert rc == 2 and "--over-time <= the 6 measured steps, got 7" in err


@pytest.mark.parametrize("argv,match", [
    (["charlm", "missing.txt"], "not found"),
    (["charlm", "EMPTY"], "empty"),
    (["copy", "--estimator", "lstm"], "lstm"),
    (["copy", "--rank", "0"], "--rank"),
    (["noise", "--estimators", "kf,ok:0"], "ok:0"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, argv, match):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    argv = [str(tmp_path / "empty.txt") if a == "EMPTY" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        _cli(capsys, *argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and match in err and len(err.strip().splitlines()) == 1
