"""Cython/OpenMP kernels: the same names and signatures as :mod:`kfrtrl._reference`.

Compiled from ``kernels/*.pyx`` by ``setup.py`` (``pip install .`` or, in a
source tree, ``python setup.py build_ext --inplace``). Importing this package
raises ImportError when the extensions are not built.
"""
try:
    from .elementwise import ew_gradient, ew_propagate
    from .elementwise import openmp_enabled as _elementwise_openmp
    from .propagate import jvp_blocks, jvp_dense, jvp_state, kf_combine, kf_fused, rank1_update, uoro_fused
    from .propagate import openmp_enabled as _propagate_openmp
    from .reduce import ok_fused, ok_reduce
    from .reduce import openmp_enabled as _reduce_openmp
    from .snap import snap1_gradient, snap1_step
    from .snap import openmp_enabled as _snap_openmp
except ImportError as exc:
    raise ImportError(f"the Cython kernels are not built ({exc}; in a source checkout run `pip install -e .`)") from exc

__all__ = [
    "ew_gradient", "ew_propagate", "jvp_blocks", "jvp_dense", "jvp_state", "kf_combine", "kf_fused", "ok_fused", "ok_reduce", "rank1_update",
    "snap1_gradient", "snap1_step", "uoro_fused"]


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (else they run serially)."""
    return _propagate_openmp() and _reduce_openmp() and _elementwise_openmp() and _snap_openmp()
