# cython: language_level=3
"""Shared inline helpers of the Cython kernels: the one BLAS wrapper, the OpenMP shim, threads.

BLAS comes only from ``scipy.linalg.cython_blas`` (function pointers
resolved at import; nothing is linked at build time).
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from *:
    """
    #ifdef _OPENMP
    #define KFRTRL_OPENMP 1
    #else
    #define KFRTRL_OPENMP 0
    #endif
    """
    # 1 when this module was compiled with OpenMP (prange runs in parallel), else 0.
    const bint KFRTRL_OPENMP


cdef enum:
    # Elements of work below which a kernel runs on one thread: opening a parallel
    # region costs more than it saves there, and far more on a loaded machine
    # (every region waits for its slowest thread to be scheduled).
    PARALLEL_MIN_WORK = 1 << 16


cdef inline int threads_for(int n_threads, Py_ssize_t work) noexcept nogil:
    """The thread count a kernel uses: ``n_threads``, or 1 below PARALLEL_MIN_WORK elements."""
    return n_threads if work >= PARALLEL_MIN_WORK and n_threads > 1 else 1


cdef inline void gemm(char ta, char tb, int m, int n, int k, floating alpha,
                      const floating *A, int lda, const floating *B, int ldb,
                      floating beta, floating *C, int ldc) noexcept nogil:
    """Row-major ``C (m, n) = alpha op(A) @ op(B) + beta C``, over sgemm/dgemm.

    ``ta``/``tb`` are b'n' or b't'; op(A) is (m, k), op(B) is (k, n); lda, ldb,
    ldc are the row strides (in elements) of the stored row-major arrays.
    Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so the
    operands swap and the flags pass through unchanged.
    """
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> B, &ldb, <float *> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> B, &ldb, <double *> A, &lda, &beta, C, &ldc)


cdef inline double sumsq(const floating *x, Py_ssize_t n) noexcept nogil:
    """Σ x_i² accumulated in float64 with eight independent partial sums."""
    cdef double acc[8]
    cdef Py_ssize_t i, j
    for j in range(8):
        acc[j] = 0.0
    for i in range(0, n - n % 8, 8):
        for j in range(8):
            acc[j] += <double> x[i + j] * x[i + j]
    for i in range(n - n % 8, n):
        acc[0] += <double> x[i] * x[i]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
