# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels of exact RTRL on element-wise cells for the Cython backend: ``ew_propagate``, ``ew_gradient``.

Same semantics and argument order as :mod:`kfrtrl._reference.elementwise`; the
last argument is the number of OpenMP threads. ``E`` and ``out`` must be
C-contiguous; other inputs may be any layout (copied when not contiguous).
Parallel over the influence rows when the work is large enough.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from _blas cimport KFRTRL_OPENMP

from kfrtrl._thresholds import threads_for


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(KFRTRL_OPENMP)


def ew_propagate(E, lam, dz, a, n_threads):
    """``E[b, z, k, :] = lam[b, k] E[b, z, k, :] + dz[b, z, k] a[b, :]`` in place."""
    lam, dz, a = (np.ascontiguousarray(x) for x in (lam, dz, a))
    n_threads = threads_for(n_threads, E.size)
    if E.dtype == np.float32:
        _propagate[float](E, lam, dz, a, n_threads)
    else:
        _propagate[double](E, lam, dz, a, n_threads)


def ew_gradient(E, c, out, n_threads):
    """``out[z, k, :] = Σ_b c[b, k] E[b, z, k, :]``, out (Z, n, m) written."""
    c = np.ascontiguousarray(c)
    n_threads = threads_for(n_threads, E.size)
    if E.dtype == np.float32:
        _gradient[float](E, c, out, n_threads)
    else:
        _gradient[double](E, c, out, n_threads)


cdef void _propagate(floating[:, :, :, ::1] E, const floating[:, ::1] lam, const floating[:, :, ::1] dz,
                     const floating[:, ::1] a, int n_threads) noexcept nogil:
    cdef Py_ssize_t B = E.shape[0], Z = E.shape[1], n = E.shape[2], m = E.shape[3]
    cdef Py_ssize_t row, b, z, k, j
    cdef floating scale, d
    for row in prange(B * Z * n, nogil=True, num_threads=n_threads, schedule="static"):
        b = row // (Z * n)
        z = (row // n) % Z
        k = row % n
        scale = lam[b, k]
        d = dz[b, z, k]
        for j in range(m):
            E[b, z, k, j] = scale * E[b, z, k, j] + d * a[b, j]


cdef void _gradient(const floating[:, :, :, ::1] E, const floating[:, ::1] c, floating[:, :, ::1] out,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t B = E.shape[0], Z = E.shape[1], n = E.shape[2], m = E.shape[3]
    cdef Py_ssize_t row, b, z, k, j
    cdef floating ck
    for row in prange(Z * n, nogil=True, num_threads=n_threads, schedule="static"):
        z = row // n
        k = row % n
        for j in range(m):
            out[z, k, j] = 0
        for b in range(B):
            ck = c[b, k]
            for j in range(m):
                out[z, k, j] = out[z, k, j] + ck * E[b, z, k, j]
