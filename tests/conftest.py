"""Shared fixtures: small random sequences for the reference tests."""
import numpy as np
import pytest


def _sequence(T, B, n_in, n_hidden, seed, dtype=np.float64):
    """Random inputs xs (T, B, n_in) and loss signals dl_dhs (T, B, n_hidden), float64 -> dtype."""
    gen = np.random.default_rng(seed)
    xs = gen.standard_normal((T, B, n_in)).astype(dtype)
    dl_dhs = gen.standard_normal((T, B, n_hidden)).astype(dtype)
    return xs, dl_dhs


@pytest.fixture
def sequence():
    """Factory ``sequence(T, B, n_in, n_hidden, seed, dtype=float64) -> (xs, dl_dhs)``."""
    return _sequence


@pytest.fixture
def run_online():
    """Factory ``run_online(est, xs, dl_dhs) -> {name: Σ_t gradient_t}``: step then gradient each step."""

    def run(est, xs, dl_dhs):
        total = None
        for x, dl in zip(xs, dl_dhs):
            est.step(x)
            g = est.gradient(dl)
            total = g if total is None else {k: total[k] + g[k] for k in g}
        return total

    return run


def rel_err(a, b):
    """||a - b|| / ||b|| (Frobenius)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def relative_error():
    """The function ``rel_err(a, b) = ||a - b|| / ||b||``."""
    return rel_err
