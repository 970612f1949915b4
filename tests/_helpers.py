"""Plain helpers shared by several test modules (importable: pytest puts tests/ on sys.path)."""
import importlib

import numpy as np
import pytest

import kfrtrl
from kfrtrl import backends, estimators

#: every compiled backend that imports here (tests parametrised over it cover a new backend at once)
COMPILED = [b for b in kfrtrl.available_backends() if b != "numpy"]


def kernel_module(backend):
    """The module of ``backend``'s kernels (same names and signatures as ``kfrtrl._reference``)."""
    return importlib.import_module(backends._MODULES[backend])


def random_signs(gen, shape, dtype):
    """Independent ±1 of ``dtype`` drawn from the Generator ``gen``."""
    return (2 * gen.integers(0, 2, size=shape) - 1).astype(dtype)


def ok_fused_step(ops, A, u, W, lam, dz, a, signs, n_threads=2, C=None, dzp=None, c=None):
    """One ``ok_fused`` call of the kernel module ``ops`` on copies of the deferred state (A, C,
    dzp); by default C = [I 0] and dzp = 0 (the factors are A as given). ``c`` (B, n): the
    gradient's cotangent, whose products the step returns.

    Returns (F, u_out, (A, C, dzp), Fc): the new factors (``ok_factors`` of the state after), the
    new u's, the state after (each backend may split the same factors differently) and the
    products F_i c (None without c).
    """
    from kfrtrl._reference.reduce import ok_factors

    B, r, p, n = A.shape
    A = np.array(A, order="C")
    C = np.tile(np.eye(r, r + 1, dtype=A.dtype), (B, 1, 1)) if C is None else np.array(C, order="C")
    dzp = np.zeros((B, p // n, n), dtype=A.dtype) if dzp is None else np.array(dzp, order="C")
    u_out = np.full(u.shape, np.nan, dtype=u.dtype)
    Fc = None if c is None else np.full((B, r, p), np.nan, dtype=A.dtype)
    ops.ok_fused(A, C, dzp, u, W, lam, dz, a, signs, c, u_out, Fc, n_threads)
    return ok_factors(A, C, dzp), u_out, (A, C, dzp), Fc


def make_or_skip(spec, cell, **kwargs):
    """``make_estimator(spec, cell, **kwargs)``, skipping the test if the estimator refuses the cell (TypeError)."""
    try:
        return estimators.make_estimator(spec, cell, **kwargs)
    except TypeError as exc:
        pytest.skip(str(exc))


def every_spec(k):
    """A spec of every registered estimator: ``name``, or ``name:k`` for those taking a parameter.

    Tests that should cover each estimator iterate this, so a new estimator module is tested
    without editing them.
    """
    return [name if estimators.param_default(name)[0] is None else f"{name}:{k}" for name in estimators.names()]


def rel_max(a, b):
    """max |a - b| / max |b| (the plain difference when b is all zero or empty)."""
    scale = np.abs(b).max() if b.size else 0.0
    diff = np.abs(a - b).max() if b.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def sequence_loss(cell, xs, dl_dhs):
    """Σ_t Σ_b <dl_dh_t, h_t> from a zero state (the loss whose gradient bptt returns)."""
    s = cell.initial_state(xs.shape[1])
    total = 0.0
    for x, dl in zip(xs, dl_dhs):
        s, _ = cell.forward(s, x)
        total += float(np.sum(dl * s[:, cell.out]))
    return total
