"""Bad input gets a clear ValueError/TypeError naming the argument, the expectation and the value."""
import numpy as np
import pytest

import kfrtrl
from kfrtrl.backends import known_backends
from kfrtrl.estimators import make_estimator
from _helpers import every_spec

B, N_IN, N_HIDDEN = 4, 2, 3
SPECS = every_spec(2)


@pytest.fixture(params=SPECS)
def est(request):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, rng=0)
    return make_estimator(request.param, cell, batch_size=B, rng=1, backend="numpy")


def _x(batch=B, n_in=N_IN, dtype=np.float64):
    return np.random.default_rng(2).standard_normal((batch, n_in)).astype(dtype)


def test_wrong_x_shape(est):
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 2\), got \(4, 3\)"):
        est.step(_x(n_in=3))
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 2\), got \(2,\)"):
        est.step(np.zeros(2))


def test_batch_mismatch(est):
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 2\), got \(3, 2\)"):
        est.step(_x(batch=3))


def test_x_not_an_array(est):
    with pytest.raises(TypeError, match="x: expected a numpy array.*got list"):
        est.step(_x().tolist())


def test_x_dtype_differs_from_cell(est):
    with pytest.raises(TypeError, match="x: expected dtype float64.*got float32"):
        est.step(_x(dtype=np.float32))
    cell32 = kfrtrl.Elman(N_IN, N_HIDDEN, dtype=np.float32, rng=0)
    est32 = type(est)(cell32, batch_size=B, backend="numpy")
    with pytest.raises(TypeError, match="x: expected dtype float32.*got float64"):
        est32.step(_x())
    with pytest.raises(TypeError, match="x: expected dtype float64.*got int64"):
        est.step(np.ones((B, N_IN), dtype=np.int64))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x(est, bad):
    x = _x()
    x[1, 0] = bad
    before = est.state.copy()
    with pytest.raises(ValueError, match="x: expected finite values, got 1 non-finite"):
        est.step(x)
    np.testing.assert_array_equal(est.state, before)   # a rejected step changes nothing


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_dl_dh(est, bad):
    est.step(_x())
    dl = np.ones((B, N_HIDDEN))
    dl[0, 2] = bad
    with pytest.raises(ValueError, match="dl_dh: expected finite values"):
        est.gradient(dl)
    with pytest.raises(ValueError, match=r"dl_dh: expected shape \(4, 3\), got \(4, 2\)"):
        est.gradient(np.ones((B, 2)))
    with pytest.raises(TypeError, match="dl_dh: expected dtype float64"):
        est.gradient(np.ones((B, N_HIDDEN), dtype=np.float32))


def test_gradient_before_step(est):
    with pytest.raises(RuntimeError, match=r"gradient: call step\(x\) first"):
        est.gradient(np.ones((B, N_HIDDEN)))


def test_bad_mask_and_state(est):
    with pytest.raises(ValueError, match=r"mask: expected a boolean array of shape \(4,\)"):
        est.reset(np.array([True, False]))
    with pytest.raises(ValueError, match="mask: expected a boolean array"):
        est.reset(np.array([1, 0, 1, 0]))
    with pytest.raises(ValueError, match=r"state: expected shape \(4, 3\), got \(4, 2\)"):
        est.state = np.zeros((B, 2))


@pytest.mark.parametrize("make,arg", [
    (lambda cell, v: kfrtrl.OK(cell, rank=v), "rank"),
    (lambda cell, v: kfrtrl.TBPTT(cell, truncation=v), "truncation"),
    (lambda cell, v: kfrtrl.KFRTRL(cell, n_chains=v), "n_chains"),
    (lambda cell, v: kfrtrl.RTRL(cell, batch_size=v), "batch_size"),
    (lambda cell, v: kfrtrl.UORO(cell, n_threads=v), "n_threads"),
])
def test_integer_arguments(make, arg):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, rng=0)
    for value in (0, -2):
        with pytest.raises(ValueError, match=f"{arg}: expected an integer >= 1, got {value}"):
            make(cell, value)
    for value in (1.5, "2", True):
        with pytest.raises(TypeError, match=f"{arg}: expected an integer >= 1"):
            make(cell, value)


@pytest.mark.parametrize("spec", SPECS)
def test_unknown_backend_lists_the_valid_ones(spec):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, rng=0)
    with pytest.raises(ValueError, match="backend: expected one of") as info:
        make_estimator(spec, cell, backend="cuda")
    message = str(info.value)
    assert "'cuda'" in message
    for valid in known_backends():
        assert repr(valid) in message


@pytest.mark.parametrize("rng", ["seed", 1.5, np.random.RandomState(0), True])
def test_bad_rng_type(rng):
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, rng=0)
    with pytest.raises(TypeError, match="rng: expected None, an int seed or a numpy.random.Generator"):
        kfrtrl.KFRTRL(cell, rng=rng)


def test_rng_accepts_seed_and_generator():
    """The same seed and an equally seeded Generator give the same draws."""
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, rng=0)
    a = kfrtrl.UORO(cell, batch_size=B, rng=5, backend="numpy")
    b = kfrtrl.UORO(cell, batch_size=B, rng=np.random.default_rng(5), backend="numpy")
    x, dl = _x(), np.ones((B, N_HIDDEN))
    a.step(x)
    b.step(x)
    np.testing.assert_array_equal(a.gradient(dl)["W"], b.gradient(dl)["W"])


def test_cell_argument():
    with pytest.raises(TypeError, match="cell: expected a kfrtrl cell"):
        kfrtrl.RTRL("elman")
    with pytest.raises(TypeError, match="cell: expected a kfrtrl cell"):
        kfrtrl.bptt(None, np.zeros((2, 1, N_IN)), np.zeros((2, 1, N_HIDDEN)))


def test_bptt_arguments():
    cell = kfrtrl.Elman(N_IN, N_HIDDEN, rng=0)
    xs, dl = np.zeros((5, 2, N_IN)), np.zeros((5, 2, N_HIDDEN))
    with pytest.raises(ValueError, match="xs: expected an array"):
        kfrtrl.bptt(cell, xs[0], dl)
    with pytest.raises(ValueError, match=r"xs: expected shape \(5, 2, 2\), got \(5, 2, 3\)"):
        kfrtrl.bptt(cell, np.zeros((5, 2, 3)), dl)
    with pytest.raises(ValueError, match=r"dl_dhs: expected shape \(5, 2, 3\), got \(4, 2, 3\)"):
        kfrtrl.bptt(cell, xs, dl[:4])
    with pytest.raises(TypeError, match="xs: expected dtype float64"):
        kfrtrl.bptt(cell, xs.astype(np.float32), dl)
    bad = dl.copy()
    bad[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="dl_dhs: expected finite values"):
        kfrtrl.bptt(cell, xs, bad)
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 3\)"):
        kfrtrl.bptt(cell, xs, dl, h0=np.zeros((1, 3)))
