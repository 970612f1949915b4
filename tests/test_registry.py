"""The estimator registry: every registered estimator's declaration, specs, state_dict and a new registration."""
import inspect

import numpy as np
import pytest

import kfrtrl
from kfrtrl import backends, estimators
from kfrtrl.estimators import _registry

NAMES = estimators.names()


def _cell(kind, dtype=np.float64):
    return {"elman": lambda: kfrtrl.Elman(2, 4, alpha=0.8, dtype=dtype, rng=3),
            "gru": lambda: kfrtrl.GRU(2, 3, dtype=dtype, rng=3),
            "lru": lambda: kfrtrl.LRU(2, 3, dtype=dtype, rng=3)}[kind]()


def _spec(name):
    """The spec with a ':k' of 2 for estimators taking one (so the parameter is exercised)."""
    return name if estimators.ESTIMATORS[name].param is None else f"{name}:2"


def _run(est, gen, steps):
    """``steps`` online steps (step + gradient), a reset of sample 0 midway; -> every step's gradient."""
    grads = []
    for t in range(steps):
        if t == steps // 2:
            est.reset(np.array([True] + [False] * (est.batch_size - 1)))
        h = est.step(gen.standard_normal((est.batch_size, est.cell.n_in)).astype(est.dtype))
        grads.append(est.gradient(gen.standard_normal(h.shape).astype(est.dtype)))
    return grads


def test_every_public_module_registers_its_estimator():
    assert set(NAMES) >= {"rtrl", "uoro", "kf", "ok", "nobacktrack", "tbptt"}
    for name, cls in estimators.ESTIMATORS.items():
        assert cls.name == name and getattr(kfrtrl, cls.__name__) is cls
        assert cls.__name__ in kfrtrl.__all__ and cls.__module__ == f"kfrtrl.estimators.{cls.__module__.split('.')[-1]}"


@pytest.mark.parametrize("name", NAMES)
def test_declaration_is_complete(name):
    cls = estimators.ESTIMATORS[name]
    assert set(cls.auto_backends) <= set(backends.known_backends()) - {"auto", "numpy"}
    param, default = estimators.param_default(name)
    if param is not None:
        assert isinstance(default, int) and default >= 1
        assert inspect.signature(cls).parameters[param].default == default
    est = estimators.make_estimator(_spec(name), _cell("elman"), batch_size=2, rng=0, backend="numpy")
    assert type(est) is cls and isinstance(est.tangents(), int) and est.tangents() >= 1
    if param is not None:
        assert getattr(est, param) == 2 and est.config()[param] == 2
    assert set(est.state_dict()["influence"]) == set(est._state_attrs) != set()


@pytest.mark.parametrize("name", NAMES)
def test_spec_parameter_and_default(name):
    param, default = estimators.param_default(name)
    cell = _cell("elman")
    if param is None:
        with pytest.raises(ValueError, match="suffix"):
            estimators.parse_spec(f"{name}:3")
        return
    assert estimators.parse_spec(f"{name}-3") == (name, 3) and estimators.canonical(f"{name}:3") == f"{name}-3"
    assert getattr(estimators.make_estimator(name, cell, backend="numpy"), param) == default
    assert getattr(estimators.make_estimator(name, cell, backend="numpy", **{param: 5}), param) == 5
    assert getattr(estimators.make_estimator(f"{name}:4", cell, backend="numpy", **{param: 5}), param) == 4


def test_make_estimator_refuses_a_keyword_no_estimator_takes():
    with pytest.raises(TypeError, match="'chains'"):
        estimators.make_estimator(NAMES[0], _cell("elman"), chains=3)


@pytest.mark.parametrize("kind", ["elman", "gru", "lru"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_continues_bit_identically(name, kind):
    """Save mid-run (just after a reset), run on; a fresh estimator (other seed) loaded from the save
    must follow exactly."""
    try:
        est = estimators.make_estimator(_spec(name), _cell(kind), batch_size=2, rng=1, backend="numpy")
    except TypeError as exc:                    # an estimator may refuse a cell it cannot run
        pytest.skip(str(exc))
    _run(est, np.random.default_rng(0), 7)
    est.reset(np.array([False, True]))
    saved = est.state_dict()
    expected = _run(est, np.random.default_rng(1), 6)
    other = estimators.make_estimator(_spec(name), _cell(kind), batch_size=2, rng=99, backend="numpy")
    _run(other, np.random.default_rng(5), 3)
    other.load_state_dict(saved)
    got = _run(other, np.random.default_rng(1), 6)
    for t, (g, e) in enumerate(zip(got, expected)):
        assert all(np.array_equal(g[k], e[k]) for k in e), t
    assert np.array_equal(other.state, est.state)


def test_state_dict_is_a_copy_and_checks_the_configuration():
    name = next(n for n in NAMES if estimators.ESTIMATORS[n].param is not None)
    cls = estimators.ESTIMATORS[name]
    est = estimators.make_estimator(f"{name}:2", _cell("elman"), batch_size=2, rng=1, backend="numpy")
    _run(est, np.random.default_rng(0), 3)
    saved = est.state_dict()
    before = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else None for k, v in saved["influence"].items()}
    _run(est, np.random.default_rng(0), 3)
    assert all(b is None or np.array_equal(saved["influence"][k], b) for k, b in before.items())
    with pytest.raises(ValueError, match=cls.param):
        estimators.make_estimator(f"{name}:3", _cell("elman"), batch_size=2, backend="numpy").load_state_dict(saved)
    with pytest.raises(ValueError, match="batch_size"):
        estimators.make_estimator(f"{name}:2", _cell("elman"), batch_size=3, backend="numpy").load_state_dict(saved)
    with pytest.raises(ValueError, match="dtype"):
        estimators.make_estimator(f"{name}:2", _cell("elman", np.float32), batch_size=2,
                                  backend="numpy").load_state_dict(saved)
    with pytest.raises(ValueError, match="shapes"):
        estimators.make_estimator(f"{name}:2", _cell("gru"), batch_size=2, backend="numpy").load_state_dict(saved)


def test_a_new_module_is_one_registration(monkeypatch):
    """What a new estimator module does (here: exact RTRL under another name) makes it usable everywhere."""
    monkeypatch.setattr(_registry, "ESTIMATORS", dict(_registry.ESTIMATORS))
    exact = _registry.ESTIMATORS[estimators.EXACT]

    @_registry.register
    class Twin(exact):
        name = "twin"

    assert "twin" in estimators.names() and "twin" in estimators.describe_specs()
    cell = _cell("elman")
    a = estimators.make_estimator("twin", cell, batch_size=2, backend="numpy")
    b = estimators.make_estimator(estimators.EXACT, cell, batch_size=2, backend="numpy")
    ga, gb = _run(a, np.random.default_rng(0), 4)[-1], _run(b, np.random.default_rng(0), 4)[-1]
    assert all(np.array_equal(ga[k], gb[k]) for k in ga)
    with pytest.raises(ValueError, match="new identifier"):
        _registry.register(Twin)
    with pytest.raises(ValueError, match="takes no argument 'depth'"):
        _registry.register(type("Bad", (exact,), {"name": "bad", "param": "depth"}))
