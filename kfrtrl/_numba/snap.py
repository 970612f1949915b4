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
    """Row i of sample b: the S-vector of every column j, through the unit's (S, S) block
    (S = 1 and 2, the Elman-type cells and the LSTM, unrolled)."""
    u = i % T.shape[1]
    m, S = G.shape[2], G.shape[3]
    if S == 1:
        t, d = T[b, u, 0, 0], D[b, i, 0]
        for j in range(m):
            G[b, i, j, 0] = t * G[b, i, j, 0] + d * a[b, j]
    elif S == 2:
        t00, t01, t10, t11 = T[b, u, 0, 0], T[b, u, 0, 1], T[b, u, 1, 0], T[b, u, 1, 1]
        d0, d1 = D[b, i, 0], D[b, i, 1]
        for j in range(m):
            g0, g1, aj = G[b, i, j, 0], G[b, i, j, 1], a[b, j]
            G[b, i, j, 0] = t00 * g0 + t01 * g1 + d0 * aj
            G[b, i, j, 1] = t10 * g0 + t11 * g1 + d1 * aj
    else:
        old = np.empty(S, dtype=G.dtype)
        for j in range(m):
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
    m, S = G.shape[2], G.shape[3]
    for j in range(m):
        out[i, j] = 0.0
    for b in range(G.shape[0]):
        if S == 1:
            c0 = c[b, u, 0]
            for j in range(m):
                out[i, j] += G[b, i, j, 0] * c0
        elif S == 2:
            c0, c1 = c[b, u, 0], c[b, u, 1]
            for j in range(m):
                out[i, j] += G[b, i, j, 0] * c0 + G[b, i, j, 1] * c1
        else:
            for j in range(m):
                acc = 0.0
                for s in range(S):
                    acc += G[b, i, j, s] * c[b, u, s]
                out[i, j] += acc


@kernel()
def _snap1_gradient(G, c, out):
    for i in range(G.shape[1]):
        _gradient_row(G, c, out, i)


@kernel(parallel=True)
def _snap1_gradient_par(G, c, out):
    for i in prange(G.shape[1]):
        _gradient_row(G, c, out, i)
