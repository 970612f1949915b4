"""The series task, the synthetic generators, learning-rate schedules and the Kalman-like filter."""
import numpy as np
import pytest

import kfrtrl
from kfrtrl import optim, synthetic, tasks, train
from kfrtrl.series import RunningMoments, Series, load_table

# ---------------------------------------------------------------- the series task


def test_series_targets_inputs_and_online_normalisation_on_a_hand_made_array():
    data = np.array([[1.0, 10.0], [3.0, 20.0], [2.0, 50.0], [6.0, 40.0], [4.0, 30.0]])
    task = Series(data, targets=[0], inputs=[1], horizon=2, normalize=False)
    xs, ys = [], []
    for _ in range(3):
        x, y, reset = task.next()
        xs.append(x[0, 0])
        ys.append(y[0, 0])
    assert xs == [10.0, 20.0, 50.0] and ys == [2.0, 6.0, 4.0]
    assert task.steps_per_pass == 3 and task.next()[2][0]            # wraps round with a reset

    task = Series(data, targets=[0], horizon=1)                      # inputs: all columns
    x, y, _ = task.next()                                            # one row seen: mean = row, std 1
    np.testing.assert_allclose(x, [[0.0, 0.0]])
    np.testing.assert_allclose(y, [[3.0 - 1.0]])
    x, y, _ = task.next()                                            # rows 0-1: mean (2, 15), std (1, 5)
    np.testing.assert_allclose(x, [[(3 - 2) / 1, (20 - 15) / 5]])
    np.testing.assert_allclose(y, [[(2 - 2) / 1]])
    x, y, _ = task.next()                                            # rows 0-2 only: no look-ahead
    mean, std = data[:3].mean(axis=0), data[:3].std(axis=0)
    np.testing.assert_allclose(x, [(data[2] - mean) / std])
    np.testing.assert_allclose(y, [[(data[3, 0] - mean[0]) / std[0]]])


def test_running_moments_equal_numpy_on_every_prefix():
    rows = np.random.default_rng(0).standard_normal((20, 3)) * [1, 10, 0.1] + [5, -2, 0]
    m = RunningMoments(3)
    for i in range(20):
        m.add(rows[i:i + 1])
        np.testing.assert_allclose(m.mean, rows[: i + 1].mean(axis=0), rtol=1e-12, atol=1e-12)
        if i:
            np.testing.assert_allclose(m.std(), rows[: i + 1].std(axis=0), rtol=1e-10)


def test_series_metrics_naive_constant_and_model_in_data_units():
    data = np.array([[1.0], [3.0], [2.0], [6.0], [4.0]])
    task = Series(data, targets=[0], normalize=False)
    preds = [2.0, 2.0, 5.0, 5.0]
    for p in preds:
        task.next()
        task.observe(None, np.array([[p]]))
    target, last = data[1:, 0], data[:-1, 0]
    m = task.metrics()
    assert m["mse"] == pytest.approx(np.mean((np.array(preds) - target) ** 2))
    assert m["naive_mse"] == pytest.approx(np.mean((last - target) ** 2))
    assert m["const_mse"] == pytest.approx(target.var())
    assert m["ratio_naive"] == pytest.approx(m["mse"] / m["naive_mse"])
    assert task.metrics(last=0.5)["mse"] == pytest.approx(np.mean((np.array(preds[2:]) - target[2:]) ** 2))


def test_series_prediction_is_undone_from_normalised_units():
    data = np.random.default_rng(1).standard_normal((30, 2)) * 7 + 3
    task = Series(data, targets=[1])
    for t in range(10):
        _, y, _ = task.next()
        task.observe(None, y)                                        # a perfect model in normalised units
    assert task.metrics()["mse"] == pytest.approx(0.0, abs=1e-20)


def test_batch_streams_offsets_and_stacks():
    data = np.arange(20.0)[:, None]
    task = Series(data, targets=[0], horizon=1, batch_size=4, normalize=False)
    x, y, reset = task.next()
    np.testing.assert_array_equal(x[:, 0], [0, 4, 9, 14])           # offsets b·19//4
    np.testing.assert_array_equal(y[:, 0], [1, 5, 10, 15])
    assert reset.all()
    stack = np.stack([np.arange(10.0), -np.arange(10.0)])[..., None]
    task = Series(stack, targets=[0], batch_size=2, normalize=False)
    x, y, _ = task.next()
    np.testing.assert_array_equal(x[:, 0], [0, 0])
    np.testing.assert_array_equal(y[:, 0], [1, -1])
    with pytest.raises(ValueError, match="batch_size: expected 2"):
        Series(stack, targets=[0], batch_size=3)


def test_csv_with_header_columns_by_name_and_npy(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("time,price,volume\n0,1.5,10\n1,2.5,11\n2,3.0,9\n")
    data, names = load_table(path)
    assert names == ["time", "price", "volume"] and data.shape == (3, 3)
    task = Series(path, targets="price", inputs="price,volume")
    assert task.inputs == [1, 2] and task.targets == [1]
    np.save(tmp_path / "a.npy", data)
    assert Series(tmp_path / "a.npy", targets=[1]).n_in == 3


@pytest.mark.parametrize("text, match", [
    ("a,b\n1,2\n3,\n", r"row 1, column 'b': expected a number, got ''"),
    ("a,b\n1,2\n3,x\n", r"row 1, column 'b': expected a number, got 'x'"),
    ("a,b\n1,2\n3,nan\n", r"row 1, column 'b': expected a finite number, got nan"),
    ("1,2\n3,4,5\n", r"row 1: expected 2 columns, got 3"),
    ("a,b\n1,2\n", r"expected a \(rows >= 2"),
])
def test_bad_csv_files_name_the_row_and_column(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        Series(path, targets=[0])


def test_bad_arrays_and_columns_are_named():
    data = np.ones((5, 2))
    data[3, 1] = np.nan
    with pytest.raises(ValueError, match="data: row 3, column 1: expected a finite number, got nan"):
        Series(data, targets=[0])
    with pytest.raises(ValueError, match="data: expected numbers, got dtype <U1"):
        Series(np.array([["a"], ["b"]]), targets=[0])
    with pytest.raises(ValueError, match=r"targets: expected column names or indices among indices 0..1, got 'x'"):
        Series(np.ones((5, 2)), targets="x")
    with pytest.raises(ValueError, match=r"inputs: expected column names or indices among indices 0..1, got 5"):
        Series(np.ones((5, 2)), targets=[0], inputs=[5])
    with pytest.raises(ValueError, match="horizon: expected fewer than the 5 rows"):
        Series(np.ones((5, 2)), targets=[0], horizon=5)
    with pytest.raises(ValueError, match="path: expected an existing CSV or NPY file"):
        Series("no/such/file.csv", targets=[0])


def test_series_checkpoint_resumes_bit_for_bit(tmp_path):
    data = synthetic.sample(synthetic.lgss_model(2, 10.0, 0.5, rng=0), 200, rng=1)

    def build():
        cell = kfrtrl.Elman(1, 4, rng=2)
        trainer = train.Trainer(kfrtrl.NoBackTrack(cell, rng=3), 1, loss="mse", optimizer="kalman",
                                lr=optim.Schedule(0.05, tau=10.0, rho=0.75), rng=4)
        return trainer, Series(data, targets=[0])

    trainer, task = build()
    train.run(trainer, task, 60)
    train.save_checkpoint(tmp_path / "c.ckpt", trainer, task)
    train.run(trainer, task, 40)
    other, other_task = build()
    other.schedule = optim.Schedule(1.0)            # restored from the checkpoint
    train.load_checkpoint(tmp_path / "c.ckpt", other, other_task)
    train.run(other, other_task, 40)
    np.testing.assert_array_equal(other.cell.W, trainer.cell.W)
    assert other.schedule.config() == trainer.schedule.config()
    assert other_task.metrics() == task.metrics()


# ---------------------------------------------------------------- synthetic generators


def test_kalman_optimal_mse_on_cases_computable_by_hand():
    def scalar(a, q, r):
        return synthetic.StateSpace(np.array([[a]]), np.array([[1.0]]), np.array([[q]]), np.array([[r]]))

    assert synthetic.kalman_mse(scalar(0.0, 1.0, 0.5)) == pytest.approx(1.5)       # unpredictable: q + r
    assert synthetic.kalman_mse(scalar(0.9, 0.3, 0.0)) == pytest.approx(0.3)       # observed state: q
    # a = 0.5, q = r = 1: P = a²P − a²P²/(P + r) + q  <=>  P² − P/4 − 1 = 0
    P = (0.25 + np.sqrt(0.0625 + 4.0)) / 2.0
    assert synthetic.kalman_mse(scalar(0.5, 1.0, 1.0)) == pytest.approx(P + 1.0, rel=1e-12)


def test_kalman_filter_on_samples_reaches_the_optimal_mse():
    model = synthetic.lgss_model(3, memory=30.0, obs_noise=0.5, rng=0)
    ys = synthetic.sample(model, 20000, rng=1)
    pred = synthetic.kalman_predict(model, ys)
    mse = np.mean((pred - ys[1:]) ** 2)
    assert mse == pytest.approx(synthetic.kalman_mse(model), rel=0.05)
    assert np.max(np.abs(np.linalg.eigvals(model.A))) == pytest.approx(np.exp(-1 / 30.0))
    assert synthetic.sample(model, 50, batch=3, rng=2).shape == (3, 50, 1)


def test_lob_stream_depends_on_the_lagged_order_flow():
    data = synthetic.lob(20000, memory=20.0, rng=0)
    assert data.shape == (20000, len(synthetic.LOB_COLUMNS)) and np.isfinite(data).all()
    mid, ofi = data[1:, 0], data[:-1, 3]
    average = np.zeros_like(ofi)                                    # the order flow averaged over ~20 steps
    for t in range(1, len(ofi)):
        average[t] = 0.95 * average[t - 1] + ofi[t - 1]
    assert np.corrcoef(mid, average)[0, 1] > 0.5 > 2 * np.corrcoef(mid, ofi)[0, 1]
    spread = data[:, 1]
    assert spread.min() == 1.0 and np.all(spread == np.round(spread)) and np.mean(spread == 1.0) > 0.5


@pytest.mark.parametrize("lag", [0, 3, 7])
def test_lob_lag_delays_the_informed_flow(lag):
    """With memory 1 the informed move of step t follows the sign of the order flow of step t − 1 − lag:
    the mid-price change correlates with that lag of the flow most (and the flow itself is unchanged)."""
    data = synthetic.lob(20000, memory=1.0, impact=1.0, lag=lag, rng=4)
    np.testing.assert_array_equal(data[:, 3:], synthetic.lob(20000, memory=1.0, impact=1.0, rng=4)[:, 3:])
    mid, sign = data[:, 0], np.sign(data[:, 3])
    corr = [np.corrcoef(mid[k:], sign[:len(sign) - k])[0, 1] for k in range(1, 12)]
    assert np.argmax(corr) + 1 == lag + 1 and max(corr) > 0.3


def test_delay_series_targets_the_input_lag_minus_one_steps_back():
    data = synthetic.delay(30, lag=4, rng=0)
    np.testing.assert_array_equal(data[4:, 1], data[:-4, 0])
    task = Series(data, targets=[1], inputs=[0], horizon=1, normalize=False)
    xs = [task.next()[0][0, 0] for _ in range(3)]
    for _ in range(5):
        xs.append(task.next()[0][0, 0])
    _, y, _ = task.next()
    assert y[0, 0] == xs[-3]                                        # 3 = lag - 1 steps before the current input


# ---------------------------------------------------------------- schedules and the Kalman-like filter


def test_schedule_values():
    s = optim.Schedule(0.1, tau=100.0, rho=0.75)
    assert s(0) == 0.1
    assert s(100) == pytest.approx(0.1 / 2 ** 0.75)
    assert s(300) == pytest.approx(0.1 / 4 ** 0.75)
    assert optim.Schedule(0.1, tau=10.0)(90) == pytest.approx(0.01)
    assert optim.Schedule(0.1)(10 ** 6) == 0.1
    for bad in ({"rho": 0.5}, {"rho": 1.5}, {"tau": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            optim.Schedule(0.1, **{"tau": 1.0, **bad})


def test_trainer_applies_the_schedule_to_sgd_and_adam():
    cell = kfrtrl.Elman(1, 2, rng=0)
    trainer = train.Trainer(kfrtrl.RTRL(cell), 1, loss="mse", optimizer="sgd", clip=None,
                            lr=optim.Schedule(0.5, tau=1.0, rho=1.0), rng=1)
    seen = []
    trainer.optimizer.update = lambda params, grads, lr: seen.append(lr)
    for _ in range(3):
        trainer.step(np.ones((1, 1)), np.ones((1, 1)))
    assert seen == [0.5, 0.25, 0.5 / 3]


def _dense_fisher(fs, gamma, rank):
    """fs (T, C, p): J ← (1 − γ) J + γ Σ_c f_c f_cᵀ, truncated to the top rank eigenpairs, bias-corrected."""
    J = np.zeros((fs.shape[2], fs.shape[2]))
    for F in fs:
        J = (1 - gamma) * J + gamma * F.T @ F
        if rank:
            w, V = np.linalg.eigh(J)
            top = np.argsort(w)[::-1][:rank]
            J = (V[:, top] * w[top]) @ V[:, top].T
    return J / (1 - (1 - gamma) ** len(fs))


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_kalman_filter_step_equals_a_dense_computation(rank):
    rng = np.random.default_rng(0)
    shapes = {"a": (2, 3), "b": (4,)}
    kf = optim.KalmanFilter(gamma=0.3, damping=0.05, rank=rank)
    fs = []
    for _ in range(6):
        f = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(2)]   # two output dimensions
        kf.observe(f)
        fs.append([np.concatenate([fc["a"].ravel(), fc["b"]]) for fc in f])
    J = _dense_fisher(np.array(fs), 0.3, rank)
    if rank == 0:
        J = np.diag(np.diag(J))
    g = {k: rng.standard_normal(s) for k, s in shapes.items()}
    params = {k: np.zeros(s) for k, s in shapes.items()}
    kf.update(params, g, lr=0.5)
    expected = -0.5 * np.linalg.solve(J + 0.05 * np.eye(10), np.concatenate([g["a"].ravel(), g["b"]]))
    np.testing.assert_allclose(np.concatenate([params["a"].ravel(), params["b"]]), expected, rtol=1e-10, atol=1e-12)


def test_kalman_filter_fisher_factors_are_a_root_of_the_output_fisher():
    kf = optim.KalmanFilter(rng=0)
    out = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]])
    for b in range(2):
        L = np.column_stack([d[0] for d in kf.fisher_factors("xent", out[b:b + 1])])     # batch 1: no signs
        p = np.exp(out[b]) / np.exp(out[b]).sum()
        np.testing.assert_allclose(L @ L.T, np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(np.vstack(kf.fisher_factors("mse", np.zeros((1, 2)))), np.eye(2))
    for d, k in zip(kf.fisher_factors("xent", out), range(3)):                         # batch 2: ±row / √2
        for b in range(2):
            row = kf.fisher_factors("xent", out[b:b + 1])[k][0]
            np.testing.assert_allclose(np.abs(d[b]), np.abs(row) / np.sqrt(2), rtol=1e-12)


def _logits(cell, W_out, theta, x):
    """The readout's logits after one step from the zero state, for the flat parameter vector theta."""
    n = cell.W.size
    saved = cell.W.copy()
    cell.W[...] = theta[:n].reshape(cell.W.shape)
    h, _ = cell.forward(cell.initial_state(1), x)
    cell.W[...] = saved
    R = theta[n:].reshape(W_out.shape)
    return h @ R[:, :-1].T + R[:, -1]


def test_trainer_fisher_term_equals_the_dense_jacobian_fisher():
    """One step from the zero state, exact RTRL, γ = 1, full rank: J = Hᵀ (diag p − p pᵀ) H, H by finite differences."""
    cell = kfrtrl.Elman(2, 3, rng=0)
    kf = optim.KalmanFilter(gamma=1.0, damping=1.0, rank=3 * 6 + 3 * 4, rng=1)
    trainer = train.Trainer(kfrtrl.RTRL(cell, backend="numpy"), 3, loss="xent", optimizer=kf, lr=0.0, rng=2)
    x = np.array([[0.7, -1.2]])
    theta = np.concatenate([cell.W.ravel(), trainer.readout.W.ravel()])     # sorted keys: cell.W, readout.W
    eps = 1e-6
    H = np.column_stack([(_logits(cell, trainer.readout.W, theta + eps * e, x)
                          - _logits(cell, trainer.readout.W, theta - eps * e, x))[0] / (2 * eps)
                         for e in np.eye(len(theta))])
    out = _logits(cell, trainer.readout.W, theta, x)[0]
    p = np.exp(out - out.max())
    p /= p.sum()
    trainer.step(x, np.array([1]))
    J = (kf.U * kf.s) @ kf.U.T
    np.testing.assert_allclose(J, H.T @ (np.diag(p) - np.outer(p, p)) @ H, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("spec", ["nobacktrack", "rtrl", "tbptt:3"])
def test_kalman_optimizer_learns_with_any_estimator(spec):
    data = synthetic.sample(synthetic.lgss_model(2, 10.0, 0.2, rng=0), 3000, rng=1)
    cell = kfrtrl.Elman(1, 8, rng=2)
    est = train.make_estimator(spec, cell, rng=3, backend="numpy")
    trainer = train.Trainer(est, 1, loss="mse", optimizer="kalman", lr=0.02, rng=4)
    task = Series(data, targets=[0])
    train.run(trainer, task, 2999)
    assert task.metrics(last=0.2)["ratio_const"] < 0.8


def test_kalman_filter_bad_arguments():
    for kwargs, match in [({"gamma": 0.0}, "gamma"), ({"damping": 0.0}, "damping"), ({"rank": -1}, "rank")]:
        with pytest.raises(ValueError, match=match):
            optim.KalmanFilter(**kwargs)


def test_series_is_a_task():
    assert tasks.Series is Series
