"""One place for the compilation options of every numba kernel.

Every kernel in :mod:`kfrtrl._numba` is decorated with :func:`kernel`, so the
options below are the only ones in the package:

- ``cache=True``: compiled code is stored next to the source, so only the
  first call on a machine pays for compilation (nothing compiles at import);
- ``nogil=True``: kernels release the GIL;
- ``fastmath`` with the value-safe flags only: contraction into FMAs,
  reassociation (vectorised reductions), reciprocal approximation of
  divisions and no signed zeros. ``nnan``/``ninf`` are deliberately off: the
  estimators detect non-finite factors after the kernels ran, and kernels
  compare norms against zero. The results differ from the numpy reference by
  round-off only (the backend tests check 1e-10 relative in float64);
- ``error_model="numpy"``: division by zero gives inf/nan instead of raising
  (the kernels guard their divisions; this keeps the loops vectorisable).

numba itself is imported lazily (only when a numba kernel is defined, i.e.
when the numba backend is requested), so ``import kfrtrl`` stays fast.
"""
FASTMATH = frozenset({"contract", "reassoc", "arcp", "nsz"})
OPTIONS = {"cache": True, "nogil": True, "fastmath": set(FASTMATH), "error_model": "numpy"}


def kernel(parallel=False, inline=False):
    """Decorator compiling a function with :data:`OPTIONS` (``parallel`` enables ``prange``).

    ``inline=True``: the function is inlined into its callers at numba's IR level
    (for small per-row helpers: a call per row with a dozen array arguments costs
    more than the row's work). Returns the ``numba.njit`` decorator; the function
    is compiled lazily at its first call for the argument types it receives.
    """
    import numba

    return numba.njit(parallel=parallel, inline="always" if inline else "never", **OPTIONS)
