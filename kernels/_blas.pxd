# cython: language_level=3
"""Shared inline helpers of the Cython kernels: the one BLAS wrapper, the OpenMP shim, a sum of
squares and the Elman-type step. (Thresholds and thread counts: ``kfrtrl._thresholds``; the C
row loops: the headers beside each ``.pyx``.)

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


cdef inline void step_matrix(const floating *W, int ldw, const floating *lam, const floating *dz,
                             int n, int nz, bint transposed, floating *H) noexcept nogil:
    """H (n, n) row-major = diag(lam) + Σ_z diag(dz_z) W[z n:(z+1) n, :n]: a step's Jacobian H_b.

    ``nz`` diagonal blocks (1: an Elman step, 2: the RHN's candidate and gate), dz (nz, n)
    row-major; W row-major with row stride ``ldw`` (>= n); lam (n,); H must not overlap them.
    With ``transposed`` (nz = 1 only), W holds W[:, :n]ᵀ and H gets H_bᵀ = diag(lam) + W diag(dz)
    (the same entries, each read and written along rows).
    """
    cdef Py_ssize_t i, j, z
    cdef floating d
    cdef floating *row
    cdef const floating *w
    for i in range(n):
        row = H + i * n
        w = W + i * ldw
        if transposed:
            for j in range(n):
                row[j] = w[j] * dz[j]
        else:
            d = dz[i]
            for j in range(n):
                row[j] = d * w[j]
            for z in range(1, nz):
                d = dz[z * n + i]
                w = W + (z * n + i) * ldw
                for j in range(n):
                    row[j] = row[j] + d * w[j]
        row[i] = row[i] + lam[i]


cdef inline void step_propagate(const floating *V, int rows, const floating *W, int ldw,
                                const floating *lam, const floating *dz, int n, int nz,
                                bint transposed, floating *H, floating *out) noexcept nogil:
    """out (rows, n) = V H_bᵀ for V (rows, n): ``rows`` tangents through one step.

    H_b (or H_bᵀ, with ``transposed``) is formed in the scratch H (n, n) by
    :func:`step_matrix` (same arguments), then one GEMM that reads it transposed (or not).
    All arrays row-major and contiguous but W (row stride ``ldw``); out must not
    overlap V or H. The two forms agree in exact arithmetic, not bit for bit (BLAS
    sums differently for a transposed operand at some sizes).
    """
    step_matrix(W, ldw, lam, dz, n, nz, transposed, H)
    gemm(c'n', c'n' if transposed else c't', rows, n, n, <floating> 1.0, V, n, H, n,
         <floating> 0.0, out, n)
