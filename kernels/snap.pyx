# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels of the sparse influence estimators (SnAp-1, RFLO) for the Cython backend:
``snap1_step`` and ``snap1_gradient``, with the semantics and argument order of
:mod:`kfrtrl._reference.snap`; the last argument is the number of OpenMP threads.
Inputs may be any layout (copied to C order); the influence ``G`` and the output
must be C-contiguous. Both are one pass over G, parallel over the weight rows.
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _blas cimport KFRTRL_OPENMP

from kfrtrl._thresholds import threads_for

# Largest number of state blocks per unit (the LSTM has 2): the row loop keeps one
# unit's entries on the stack.
cdef enum:
    _MAX_BLOCKS = 8
MAX_BLOCKS = _MAX_BLOCKS


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(KFRTRL_OPENMP)


def snap1_step(G, T, D, a, n_threads):
    """``G[b, i, j] = T[b, i mod n] @ G[b, i, j] + D[b, i] a[b, j]``, in place.

    G (B, p, m, S) C-contiguous, S <= MAX_BLOCKS; T (B, n, S, S); D (B, p, S); a (B, m).
    """
    if G.shape[3] > MAX_BLOCKS:
        raise ValueError(f"G: expected at most {MAX_BLOCKS} state blocks, got {G.shape[3]}")
    T, D, a = (np.ascontiguousarray(x) for x in (T, D, a))
    n_threads = threads_for(n_threads, G.size)
    if G.dtype == np.float32:
        _snap1_step[float](G, T, D, a, n_threads)
    else:
        _snap1_step[double](G, T, D, a, n_threads)


cdef void _snap1_step(floating[:, :, :, ::1] G, const floating[:, :, :, ::1] T,
                      const floating[:, :, ::1] D, const floating[:, ::1] a, int n_threads) noexcept nogil:
    cdef Py_ssize_t p = G.shape[1], bi, b, i
    for bi in prange(G.shape[0] * p, nogil=True, num_threads=n_threads, schedule='static'):
        b = bi // p
        i = bi - b * p
        _step_row(G, T, D, a, b, i)


cdef inline void _step_row(floating[:, :, :, ::1] G, const floating[:, :, :, ::1] T,
                           const floating[:, :, ::1] D, const floating[:, ::1] a,
                           Py_ssize_t b, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t m = G.shape[2], S = G.shape[3], u = i % T.shape[1], j, s, k
    cdef floating old[_MAX_BLOCKS]
    cdef floating t, d, acc
    cdef floating *g
    if S == 1:
        t = T[b, u, 0, 0]
        d = D[b, i, 0]
        g = &G[b, i, 0, 0]
        for j in range(m):
            g[j] = t * g[j] + d * a[b, j]
        return
    for j in range(m):
        g = &G[b, i, j, 0]
        for s in range(S):
            old[s] = g[s]
        for s in range(S):
            acc = D[b, i, s] * a[b, j]
            for k in range(S):
                acc = acc + T[b, u, s, k] * old[k]
            g[s] = acc


def snap1_gradient(G, c, out, n_threads):
    """``out[i, j] = Σ_b Σ_s G[b, i, j, s] c[b, i mod n, s]``.

    G (B, p, m, S) C-contiguous; c (B, n, S); out (p, m) C-contiguous, written.
    """
    c = np.ascontiguousarray(c)
    n_threads = threads_for(n_threads, G.size)
    if G.dtype == np.float32:
        _snap1_gradient[float](G, c, out, n_threads)
    else:
        _snap1_gradient[double](G, c, out, n_threads)


cdef void _snap1_gradient(const floating[:, :, :, ::1] G, const floating[:, :, ::1] c,
                          floating[:, ::1] out, int n_threads) noexcept nogil:
    cdef Py_ssize_t B = G.shape[0], m = G.shape[2], S = G.shape[3], i, u, b, j, s
    cdef floating cs
    for i in prange(G.shape[1], nogil=True, num_threads=n_threads, schedule='static'):
        u = i % c.shape[1]
        for j in range(m):
            out[i, j] = 0
        for b in range(B):
            for s in range(S):
                cs = c[b, u, s]
                for j in range(m):
                    out[i, j] = out[i, j] + G[b, i, j, s] * cs
