"""What the numba kernels share: the parallel decision, per-sample views, the Elman-type step matrix.

Every public numba kernel is a small Python function that issues the large GEMMs through
BLAS (numpy's for whole-batch products; ``np.dot`` inside a compiled loop for per-sample
ones, whose operands then stay in cache, with BLAS held at one thread when the loop runs in
parallel) and hands the remaining elementwise and per-sample work to compiled loops, fused
into as few passes over memory as possible. A loop runs in parallel (``prange`` over rows or
samples, thread count set by :func:`kfrtrl.threads.limit`) only when ``n_threads > 1`` and
the work reaches :data:`kfrtrl._thresholds.PARALLEL_MIN_WORK` elements.
"""
import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import get_cython_function_address, intrinsic

# np.dot in compiled code calls scipy's BLAS, which numba loads lazily: import it with this
# backend, so that thread limits (kfrtrl.threads) entered afterwards see that library too.
import scipy.linalg.cython_blas  # noqa: F401

from .. import _thresholds
from .._jit import kernel


def _parallel(n_threads, work):
    """True when a kernel with ``work`` elements runs its parallel variant."""
    return _thresholds.threads_for(n_threads, work) > 1


@intrinsic
def _pointer(typingctx, address, dtype):
    """The integer ``address`` as a pointer to ``dtype`` (for :func:`_block`)."""
    ptr = types.CPointer(dtype.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(types.uintp, dtype), codegen


@kernel()
def _block(X, b):
    """X[b] of a 3-D array whose per-sample blocks are C-contiguous, typed as a C-contiguous
    2-D array (so that ``np.dot`` can write into it whatever X's batch stride)."""
    return carray(_pointer(X[b].ctypes.data, X.dtype), (X.shape[1], X.shape[2]))


def _has_contiguous_blocks(X):
    """True if each X[b] of X (B, K, L) is C-contiguous (what :func:`_block` needs)."""
    if X.flags.c_contiguous:
        return True
    _, K, L = X.shape
    item = X.itemsize
    return (L == 1 or X.strides[2] == item) and (K == 1 or X.strides[1] == L * item)


def _blocks_contiguous(X):
    """X (B, K, L), copied unless each X[b] is C-contiguous already."""
    return X if _has_contiguous_blocks(X) else np.ascontiguousarray(X)


@kernel(inline=True)
def _diagonal_jacobian(R, lam, dz, b, H):
    """H = diag(lam[b]) + Σ_z diag(dz[b, z]) R[z n:(z+1) n] (n, n) for sample b.

    lam (B, n); dz (B, Z, n): Z = 1 for an Elman step, 2 for a gated one (the RHN's candidate
    and gate blocks); R (Z n, >= n), rows read in place.
    """
    n = H.shape[0]
    for t in range(n):
        d = dz[b, 0, t]
        for s in range(n):
            H[t, s] = R[t, s] * d
        for z in range(1, dz.shape[1]):
            d = dz[b, z, t]
            for s in range(n):
                H[t, s] += R[z * n + t, s] * d
        H[t, t] += lam[b, t]


# ---------------------------------------------------------------- strided GEMM

#: addresses of scipy's BLAS ?gemm by dtype (what ``np.dot`` in compiled code calls too), passed
#: to :func:`_gemm` as arguments: a function pointer held as a global would stop the caching
GEMM = {np.dtype(np.float64): get_cython_function_address("scipy.linalg.cython_blas", "dgemm"),
        np.dtype(np.float32): get_cython_function_address("scipy.linalg.cython_blas", "sgemm")}


@intrinsic
def _call_fortran13(typingctx, address, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12):
    """Call the C function at ``address`` with 13 pointer arguments (?gemm's Fortran interface)."""
    signature = types.void(address, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12)

    def codegen(context, builder, sig, args):
        pointer = ir.IntType(8).as_pointer()
        function = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [pointer] * 13).as_pointer())
        builder.call(function, [builder.inttoptr(a, pointer) for a in args[1:]])
        return context.get_dummy_value()

    return signature, codegen


@kernel(inline=True)
def _gemm(address, ta, tb, m, n, k, A, lda, B, ldb, C, ldc):
    """Row-major ``C (m, n) = op(A) @ op(B)`` through the BLAS ?gemm at ``address`` (:data:`GEMM`).

    A, B, C: arrays whose first element starts each matrix (views such as ``X[:, lo:]`` with a row
    stride lda, ldb, ldc in elements: column blocks of a wider array, which ``np.dot`` cannot
    take); ``ta``/``tb`` the characters 'n' or 't' as integers. Row-major C = op(A) op(B) is
    column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so the operands swap (as in the Cython backend's ``gemm``).
    """
    ints = np.empty(6, dtype=np.int32)
    ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = n, m, k, ldb, lda, ldc
    flags = np.empty(2, dtype=np.uint8)
    flags[0], flags[1] = tb, ta
    scalars = np.empty(2, dtype=C.dtype)
    scalars[0], scalars[1] = 1.0, 0.0
    _call_fortran13(address, flags[0:].ctypes.data, flags[1:].ctypes.data, ints[0:].ctypes.data,
                    ints[1:].ctypes.data, ints[2:].ctypes.data, scalars[0:].ctypes.data, B.ctypes.data,
                    ints[3:].ctypes.data, A.ctypes.data, ints[4:].ctypes.data, scalars[1:].ctypes.data,
                    C.ctypes.data, ints[5:].ctypes.data)
