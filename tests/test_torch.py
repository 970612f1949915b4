"""kfrtrl.torch.OnlineRNN: zero-copy parameters, .grad equal to the numpy estimator's, torch optimizers train it."""
import io

import numpy as np
import pytest

import kfrtrl
from kfrtrl import tasks, train

torch = pytest.importorskip("torch", reason="torch not installed (pip install 'kfrtrl[torch]')")
from kfrtrl.torch import OnlineRNN  # noqa: E402  (after the skip: needs torch)

DTYPES = [np.float32, np.float64]
TORCH = {np.float32: torch.float32, np.float64: torch.float64}
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _inputs(T, B, n_in, dtype, seed=5):
    return np.random.default_rng(seed).standard_normal((T, B, n_in)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_parameters_share_memory_with_the_cell(dtype):
    cell = kfrtrl.GRU(3, 5, dtype=dtype, rng=0)
    rnn = OnlineRNN(cell, "kf", rng=1, backend="numpy")
    assert [name for name, _ in rnn.named_parameters()] == ["W", "Wc"]
    assert rnn.W.dtype == TORCH[dtype]
    with torch.no_grad():
        rnn.Wc[0, 0] = 7.0
    assert cell.Wc[0, 0] == 7.0
    cell.W[1, 2] = -3.0
    assert rnn.W[1, 2].item() == -3.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", ["rtrl", "uoro", "kf:2", "ok:2", "nobacktrack", "tbptt:3"])
def test_grad_equals_the_numpy_estimators_gradient(spec, dtype):
    """Same seeds: the torch path's .grad at every step is the numpy estimator's gradient."""
    B, T = 3, 6
    np_cell, t_cell = (kfrtrl.LSTM(2, 4, dtype=dtype, rng=0) for _ in range(2))
    est = train.make_estimator(spec, np_cell, batch_size=B, rng=7, backend="numpy")
    rnn = OnlineRNN(t_cell, spec, batch_size=B, rng=7, backend="numpy")
    target = torch.linspace(-1, 1, 4, dtype=TORCH[dtype])
    for x in _inputs(T, B, 2, dtype):
        h_np = est.step(x)
        expected = est.gradient((2 * (h_np - target.numpy())).astype(dtype))    # ∂/∂h of Σ (h - target)²
        rnn.zero_grad()
        h = rnn(torch.from_numpy(x))
        np.testing.assert_array_equal(h.detach().numpy(), h_np)
        ((h - target) ** 2).sum().backward()
        got = rnn.W.grad.numpy()
        assert got.dtype == dtype
        assert np.abs(got - expected["W"]).max() <= TOL[dtype] * np.abs(expected["W"]).max()


def test_reset_and_a_late_backward():
    cell = kfrtrl.Elman(2, 3, rng=0)
    rnn = OnlineRNN(cell, "rtrl", batch_size=2, backend="numpy")
    h1 = rnn(torch.ones(2, 2, dtype=torch.float64))
    rnn.reset(torch.tensor([True, False]))
    assert rnn.estimator.state[0].tolist() == [0.0, 0.0, 0.0] and rnn.estimator.state[1].any()
    rnn(torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="backward of step 1 after step 2"):
        h1.sum().backward()


def test_bad_input():
    rnn = OnlineRNN(kfrtrl.Elman(2, 3, rng=0), "kf", batch_size=2, backend="numpy")
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        rnn(np.ones((2, 2)))
    with pytest.raises(ValueError, match="x: expected a tensor that does not require grad"):
        rnn(torch.ones(2, 2, dtype=torch.float64, requires_grad=True))
    with pytest.raises(TypeError, match="x: expected dtype float64"):
        rnn(torch.ones(2, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 2\)"):
        rnn(torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="cell: expected a kfrtrl cell"):
        OnlineRNN(torch.nn.RNN(2, 3))
    rnn.double()                                    # already float64: still shared
    rnn(torch.ones(2, 2, dtype=torch.float64))
    rnn.float()
    with pytest.raises(RuntimeError, match="no longer shares memory"):
        rnn(torch.ones(2, 2, dtype=torch.float64))


def test_state_dict_resumes_bit_for_bit():
    """Save mid-run through torch.save/torch.load(weights_only=True); the resumed copy continues identically."""
    xs = _inputs(8, 2, 2, np.float64)

    def make():
        return OnlineRNN(kfrtrl.Elman(2, 4, rng=0), "ok:2", batch_size=2, rng=3, backend="numpy")

    def run(rnn, opt, steps):
        out = []
        for x in steps:
            h = rnn(torch.from_numpy(x))
            opt.zero_grad()
            h.pow(2).sum().backward()
            opt.step()
            out.append(h.detach().numpy())
        return np.array(out)

    a = make()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    run(a, opt_a, xs[:4])
    buf = io.BytesIO()
    torch.save({"rnn": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    rest_a = run(a, opt_a, xs[4:])
    b = make()
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b.load_state_dict(saved["rnn"])
    opt_b.load_state_dict(saved["opt"])
    assert b.steps == 4
    np.testing.assert_array_equal(run(b, opt_b, xs[4:]), rest_a)
    np.testing.assert_array_equal(b.W.detach().numpy(), a.W.detach().numpy())


@pytest.fixture
def one_torch_thread():
    """torch's own thread pool at 1 for the test (it fights the kernels' threads on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_adam_trains_the_copy_task(dtype, one_torch_thread):
    """A torch readout and torch.optim.Adam around the bridge: the copy task's curriculum advances.

    A short curriculum average (decay 0.99) keeps it quick; untrained (lr = 0) T_cur stays at 1.
    """
    B, n = 8, 16
    task = tasks.CopyTask(batch_size=B, curriculum=tasks.Curriculum(decay=0.99), rng=3, dtype=dtype)
    rnn = OnlineRNN(kfrtrl.Elman(4, n, dtype=dtype, rng=0), "ok:2", batch_size=B, rng=1)
    torch.manual_seed(0)
    head = torch.nn.Linear(n, 4, dtype=TORCH[dtype])
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(800):
        x, y, reset = task.next()
        rnn.reset(reset)
        logits = head(rnn(torch.from_numpy(x)))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="none")
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        bits = loss.detach().numpy() / np.log(2.0)
        task.observe(bits)
        losses.append(bits.mean())
    assert task.T_cur >= 4
    assert np.mean(losses[:100]) > 0.4 and np.mean(losses[-100:]) < 0.3
