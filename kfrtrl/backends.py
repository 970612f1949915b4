"""The registry of kernel backends.

A backend is a module exposing the kernels of :mod:`kfrtrl._reference.kernels`
under the same names and signatures. ``"numpy"`` is the reference and always
present; compiled backends register here and are tested against it.
"""
import importlib
import warnings

from . import _reference

# name -> module path; the order is the preference of "auto" when nothing better is known.
_MODULES = {
    "numpy": "kfrtrl._reference",
    "numba": "kfrtrl._numba",
    "cython": "kfrtrl._cy",
}
# estimator name -> backend chosen by "auto", from bench/test_kernels.py (1 thread, float64):
# numba's step is 1.3-3x faster than numpy's for KF/OK/RTRL at n >= 16, and its fused
# rank1_update 2-2.5x for UORO/NoBackTrack at n = 128, B = 16; TBPTT calls no kernel.
# Against cython (step / GEMM bound, n = 128 and 256, B = 16): numba ahead for OK r=8
# (1.33 vs 1.57, 1.23 vs 1.35), RTRL, KF and UORO, cython ahead only for OK r=1 (1.48 vs
# 1.60); one choice per estimator, so numba throughout.
_AUTO = {"rtrl": "numba", "uoro": "numba", "kf": "numba", "ok": "numba", "nobacktrack": "numba", "tbptt": "numpy"}


def known_backends():
    """All backend names, available or not, plus "auto"."""
    return sorted(_MODULES) + ["auto"]


def available_backends():
    """Names of the backends that import on this machine."""
    names = []
    for name in _MODULES:
        try:
            _load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _load(name):
    """Import backend ``name``; ImportError if it lacks any kernel of the reference."""
    module = importlib.import_module(_MODULES[name])
    missing = [k for k in _reference.__all__ if not hasattr(module, k)]
    if missing:
        raise ImportError(f"{_MODULES[name]} lacks the kernels {missing}")
    return module


def get_backend(backend, estimator):
    """Resolve ``backend`` for ``estimator`` -> (name, kernel module).

    "auto" picks the measured best for the estimator and falls back to numpy
    with a warning when that backend is missing. An explicitly named backend
    that is missing raises ImportError; an unknown name raises ValueError.
    """
    if backend not in _MODULES and backend != "auto":
        raise ValueError(f"backend: expected one of {known_backends()}, got {backend!r}")
    if backend == "auto":
        wanted = _AUTO.get(estimator, "numpy")
        try:
            return wanted, _load(wanted)
        except ImportError as exc:
            warnings.warn(f"kfrtrl: backend {wanted!r} unavailable ({exc}); using 'numpy'", stacklevel=3)
            return "numpy", _load("numpy")
    try:
        return backend, _load(backend)
    except ImportError as exc:
        raise ImportError(f"backend: {backend!r} is not available here ({exc})") from exc


def show_config(file=None):
    """Print version, backends, OpenMP, BLAS and thread counts (what a bug report needs)."""
    import os
    import platform

    import numpy as np
    from threadpoolctl import threadpool_info

    from . import __version__

    lines = [
        f"kfrtrl {__version__}  python {platform.python_version()}  numpy {np.__version__}",
        f"cores: {os.cpu_count()}",
        f"backends available: {', '.join(available_backends())} (known: {', '.join(known_backends())})",
        f"auto picks: {dict(sorted(_AUTO.items())) or 'numpy for every estimator'}",
    ]
    try:
        from . import _cy

        lines.append(f"cython OpenMP: {'on' if _cy.openmp_enabled() else 'off'}")
    except ImportError:
        lines.append("cython: not built")
    for pool in threadpool_info():
        lines.append(
            f"{pool['user_api']}: {pool['internal_api']} {pool.get('version')} "
            f"({pool['num_threads']} threads, {pool.get('architecture', '?')})"
        )
    try:
        import numba

        try:
            layer = numba.threading_layer()
        except ValueError:
            layer = "threading layer chosen at the first parallel call"
        lines.append(f"numba {numba.__version__}: {numba.get_num_threads()} threads, {layer}")
    except ImportError:
        lines.append("numba: not installed")
    print("\n".join(lines), file=file)
