"""Thread control: one context manager for BLAS, numba and OpenMP thread counts.

Nothing is changed at import. ``limit(n)`` sets every loaded BLAS pool and
numba's thread count (if numba is already imported) to ``n`` and restores
both on exit; ``blas_limit(n)`` does the same for the BLAS pools only. The
Cython/OpenMP kernels take their thread count as an explicit argument, so
they need no global setting.

Both are cheap enough to wrap every step (~2 µs when nothing changes, a few
µs more per pool that does): the BLAS libraries are found once by
threadpoolctl and looked up again only when an import has added modules
since (a new extension may bring its own BLAS, as scipy does), and a pool
is set only when its count differs from the wanted one.
"""
import contextlib
import sys

_blas = {"n_modules": -1, "pools": []}


def _blas_pools():
    """threadpoolctl's controllers of the loaded BLAS libraries (re-scanned after new imports)."""
    if len(sys.modules) != _blas["n_modules"]:
        from threadpoolctl import ThreadpoolController

        _blas["pools"] = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        _blas["n_modules"] = len(sys.modules)
    return _blas["pools"]


@contextlib.contextmanager
def blas_limit(n_threads):
    """Run the body with every loaded BLAS pool at ``n_threads`` threads, then restore."""
    changed = []
    try:
        for pool in _blas_pools():
            old = pool.get_num_threads()
            if old != n_threads:
                pool.set_num_threads(n_threads)
                changed.append((pool, old))
        yield
    finally:
        for pool, old in changed:
            pool.set_num_threads(old)


@contextlib.contextmanager
def limit(n_threads):
    """Run the body with at most ``n_threads`` BLAS and numba threads, then restore."""
    numba = sys.modules.get("numba")
    with blas_limit(n_threads):
        if numba is None:
            yield
            return
        old, new = numba.get_num_threads(), min(n_threads, numba.config.NUMBA_NUM_THREADS)
        if new == old:
            yield
            return
        numba.set_num_threads(new)
        try:
            yield
        finally:
            numba.set_num_threads(old)
