"""Numba kernels of exact RTRL on element-wise cells (see :mod:`kfrtrl._reference.elementwise`).

One pass over the influence rows, parallel over the B·Z·n rows (propagation)
or the Z·n rows (gradient) when the work is large enough.
"""
import numpy as np
from numba import prange

from .._jit import kernel
from ._common import _parallel


def ew_propagate(E, lam, dz, a, n_threads):
    """``E[b, z, k, :] = lam[b, k] E[b, z, k, :] + dz[b, z, k] a[b, :]`` in place (E C-contiguous)."""
    lam, dz, a = (np.ascontiguousarray(x) for x in (lam, dz, a))
    if _parallel(n_threads, E.size):
        _propagate_par(E, lam, dz, a)
    else:
        _propagate(E, lam, dz, a)


def ew_gradient(E, c, out, n_threads):
    """``out[z, k, :] = Σ_b c[b, k] E[b, z, k, :]`` (out (Z, n, m) C-contiguous, written)."""
    c = np.ascontiguousarray(c)
    if _parallel(n_threads, E.size):
        _gradient_par(E, c, out)
    else:
        _gradient(E, c, out)


@kernel(inline=True)
def _propagate_row(E, lam, dz, a, row):
    _, Z, n, m = E.shape
    b, z, k = row // (Z * n), (row // n) % Z, row % n
    scale, d = lam[b, k], dz[b, z, k]
    for j in range(m):
        E[b, z, k, j] = scale * E[b, z, k, j] + d * a[b, j]


@kernel()
def _propagate(E, lam, dz, a):
    for row in range(E.shape[0] * E.shape[1] * E.shape[2]):
        _propagate_row(E, lam, dz, a, row)


@kernel(parallel=True)
def _propagate_par(E, lam, dz, a):
    for row in prange(E.shape[0] * E.shape[1] * E.shape[2]):
        _propagate_row(E, lam, dz, a, row)


@kernel(inline=True)
def _gradient_row(E, c, out, row):
    B, Z, n, m = E.shape
    z, k = row // n, row % n
    for j in range(m):
        out[z, k, j] = 0.0
    for b in range(B):
        ck = c[b, k]
        for j in range(m):
            out[z, k, j] += ck * E[b, z, k, j]


@kernel()
def _gradient(E, c, out):
    for row in range(E.shape[1] * E.shape[2]):
        _gradient_row(E, c, out, row)


@kernel(parallel=True)
def _gradient_par(E, c, out):
    for row in prange(E.shape[1] * E.shape[2]):
        _gradient_row(E, c, out, row)
