"""Thread control: one context manager for BLAS, numba and OpenMP thread counts.

Nothing is changed at import. ``limit(n)`` sets the BLAS pool (through
threadpoolctl) and numba's thread count (if numba is already imported) to
``n`` and restores both on exit. The Cython/OpenMP kernels take their thread
count as an explicit argument, so they need no global setting.
"""
import contextlib
import sys

_controller = None


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def limit(n_threads):
    """Run the body with at most ``n_threads`` BLAS and numba threads, then restore."""
    numba = sys.modules.get("numba")
    old_numba = numba.get_num_threads() if numba is not None else None
    with _blas_controller().limit(limits=n_threads, user_api="blas"):
        if numba is not None:
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            if numba is not None:
                numba.set_num_threads(old_numba)
