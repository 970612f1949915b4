"""Numba kernels of the sparse influence estimators: :mod:`kfrtrl._reference.snap`, same names
and arguments. One pass over the influence per call, parallel over weight rows when
``n_threads > 1`` and the work is large enough (:func:`kfrtrl._numba._common._parallel`)."""
import numpy as np
from numba import prange

from .._jit import kernel
from ._common import _parallel


def snap1_step(G, T, D, a, n_threads):
    """``G[b, i, j] = T[b, i mod n] @ G[b, i, j] + D[b, i] a[b, j]`` in place (see the reference).

    G : (B, p, m, S);  T : (B, n, S, S);  D : (B, p, S);  a : (B, m). One pass over G.
    """
    if _parallel(n_threads, G.size):
        _snap1_step_par(G, T, D, a)
    else:
        _snap1_step(G, T, D, a)


@kernel(inline=True)
def _snap1_row(G, T, D, a, b, i):
    """Row i of sample b: the S-vector of every column j, through the unit's (S, S) block."""
    u = i % T.shape[1]
    S = G.shape[3]
    if S == 1:
        t, d = T[b, u, 0, 0], D[b, i, 0]
        for j in range(G.shape[2]):
            G[b, i, j, 0] = t * G[b, i, j, 0] + d * a[b, j]
        return
    old = np.empty(S, dtype=G.dtype)
    for j in range(G.shape[2]):
        for s in range(S):
            old[s] = G[b, i, j, s]
        for s in range(S):
            acc = D[b, i, s] * a[b, j]
            for k in range(S):
                acc += T[b, u, s, k] * old[k]
            G[b, i, j, s] = acc


@kernel()
def _snap1_step(G, T, D, a):
    p = G.shape[1]
    for row in range(G.shape[0] * p):
        _snap1_row(G, T, D, a, row // p, row % p)


@kernel(parallel=True)
def _snap1_step_par(G, T, D, a):
    p = G.shape[1]
    for row in prange(G.shape[0] * p):
        _snap1_row(G, T, D, a, row // p, row % p)


def snap1_gradient(G, c, out, n_threads):
    """``out[i, j] = Σ_b Σ_s G[b, i, j, s] c[b, i mod n, s]`` (see the reference).

    G : (B, p, m, S);  c : (B, n, S);  out : (p, m), written. One pass over G.
    """
    if _parallel(n_threads, G.size):
        _snap1_gradient_par(G, c, out)
    else:
        _snap1_gradient(G, c, out)


@kernel(inline=True)
def _gradient_row(G, c, out, i):
    u = i % c.shape[1]
    for j in range(G.shape[2]):
        out[i, j] = 0.0
    for b in range(G.shape[0]):
        for s in range(G.shape[3]):
            cs = c[b, u, s]
            for j in range(G.shape[2]):
                out[i, j] += G[b, i, j, s] * cs


@kernel()
def _snap1_gradient(G, c, out):
    for i in range(G.shape[1]):
        _gradient_row(G, c, out, i)


@kernel(parallel=True)
def _snap1_gradient_par(G, c, out):
    for i in prange(G.shape[1]):
        _gradient_row(G, c, out, i)
