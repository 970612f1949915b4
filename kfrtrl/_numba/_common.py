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
from numba import carray, types
from numba.extending import intrinsic

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
