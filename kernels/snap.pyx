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
    """Row i of sample b (S = 1 and 2, the Elman-type cells and the LSTM, unrolled)."""
    cdef Py_ssize_t m = G.shape[2], S = G.shape[3], u = i % T.shape[1], j, s, k
    cdef floating old[_MAX_BLOCKS]
    cdef floating t00, t01, t10, t11, d0, d1, g0, g1, aj, acc
    cdef floating *g = &G[b, i, 0, 0]
    cdef const floating *x = &a[b, 0]
    if S == 1:
        t00 = T[b, u, 0, 0]
        d0 = D[b, i, 0]
        for j in range(m):
            g[j] = t00 * g[j] + d0 * x[j]
    elif S == 2:
        t00, t01, t10, t11 = T[b, u, 0, 0], T[b, u, 0, 1], T[b, u, 1, 0], T[b, u, 1, 1]
        d0, d1 = D[b, i, 0], D[b, i, 1]
        for j in range(m):
            g0, g1, aj = g[2 * j], g[2 * j + 1], x[j]
            g[2 * j] = t00 * g0 + t01 * g1 + d0 * aj
            g[2 * j + 1] = t10 * g0 + t11 * g1 + d1 * aj
    else:
        for j in range(m):
            for s in range(S):
                old[s] = g[j * S + s]
            for s in range(S):
                acc = D[b, i, s] * x[j]
                for k in range(S):
                    acc = acc + T[b, u, s, k] * old[k]
                g[j * S + s] = acc


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
    cdef Py_ssize_t p = G.shape[1], i
    for i in prange(p, nogil=True, num_threads=n_threads, schedule='static'):
        _gradient_row(G, c, out, i)


cdef inline void _gradient_row(const floating[:, :, :, ::1] G, const floating[:, :, ::1] c,
                               floating[:, ::1] out, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t m = G.shape[2], S = G.shape[3], u = i % c.shape[1], b, j, s
    cdef floating c0, c1, acc
    cdef const floating *g
    cdef floating *o = &out[i, 0]
    for j in range(m):
        o[j] = 0
    for b in range(G.shape[0]):
        g = &G[b, i, 0, 0]
        if S == 1:
            c0 = c[b, u, 0]
            for j in range(m):
                o[j] = o[j] + g[j] * c0
        elif S == 2:
            c0, c1 = c[b, u, 0], c[b, u, 1]
            for j in range(m):
                o[j] = o[j] + g[2 * j] * c0 + g[2 * j + 1] * c1
        else:
            for j in range(m):
                acc = 0
                for s in range(S):
                    acc = acc + g[j * S + s] * c[b, u, s]
                o[j] = o[j] + acc
