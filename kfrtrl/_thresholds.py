"""The kernels' thresholds, defined once and read by every backend (numpy, numba, Cython).

Kernels read them from this module at each call (not at import or compile time), so a
test can change one for every backend at once.
"""
import os

# Singular values below this fraction of the largest are exact zeros in the OK reduction
# (otherwise the √σ split turns round-off into ~1e-9 errors).
SVD_ZERO = 1e-13

# Smallest pivot of the Cholesky factor of the unit-diagonal A-side Gram matrix (the sine of
# the angle between a term and the span of the earlier ones) that the OK reduction's Gram route
# accepts: its error grows as eps / pivot². Below it (exactly or nearly dependent A factors) a
# compiled backend takes the reference's Householder route in compiled code.
MIN_PIVOT = 1e-3

# Elements of work below which a kernel runs on one thread: opening a parallel region costs
# more than it saves there, and far more on a loaded machine (every region waits for its
# slowest thread to be scheduled).
PARALLEL_MIN_WORK = 1 << 16


def threads_for(n_threads, work):
    """The thread count a kernel uses for ``work`` elements: ``n_threads``, or 1 below PARALLEL_MIN_WORK."""
    return n_threads if n_threads > 1 and work >= PARALLEL_MIN_WORK else 1


# Rows per GEMM block of a Jacobian layer applied to a stack of tangents (``jvp_blocks``' general
# route): the block's product stays in cache for the element-wise pass that follows, and the blocks
# are the same on any thread count (so are the bits).
GEMM_BLOCK_ROWS = 256

# Elements (r terms x rows x n) of one block of OK's fused step (``ok_fused``): the block's
# factors, their propagation and the Jacobian stay in a core's L2 cache while the block is
# recombined, propagated and added to the Gram matrix (docs/performance.md).
OK_BLOCK_ELEMENTS = 1 << 15


def ok_block_rows(r, p, n):
    """Rows of each term per block of ``ok_fused`` (r terms of p rows of n): about
    OK_BLOCK_ELEMENTS elements, at least one row, at most p."""
    return max(1, min(p, OK_BLOCK_ELEMENTS // (r * n)))


# The cores a parallel kernel may be given on this machine (the count ``n_threads=None`` takes).
CORES = os.cpu_count() or 1


def row_blocks(batch, rows):
    """Blocks of rows each sample's GEMM is cut into (folded, dense and state-major propagation):
    1 from ``batch`` >= CORES on, else enough for every core, none empty.

    It depends on the shapes and the machine only, never on the thread count of the call: one
    thread runs the same GEMMs in turn that several run in parallel, so the bits are the same
    whatever the count (the default count switches between one and all cores).
    """
    return 1 if batch >= CORES else max(1, min(rows, -(-CORES // batch)))
