"""The registry of kernel backends.

A backend is a module exposing the kernels of :mod:`kfrtrl._reference`
under the same names and signatures. ``"numpy"`` is the reference and always
present; compiled backends register here and are tested against it.
"""
import importlib
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from . import _reference

# name -> module path (an estimator's auto_backends says which "auto" tries, in order)
_MODULES = {
    "numpy": "kfrtrl._reference",
    "numba": "kfrtrl._numba",
    "cython": "kfrtrl._cy",
}


def unbuilt_checkout_hint():
    """What to run when kfrtrl is imported from a source checkout without its compiled kernels.

    Returns
    -------
    str or None
        One line naming the checkout and the command when ``kernels/*.pyx`` lie beside the
        package without their ``kfrtrl/_cy/<name>.so``, else None (an installed package has no
        ``kernels/`` beside it, so this costs one directory listing).
    """
    package = Path(__file__).resolve().parent
    root = package.parent
    sources = sorted(root.glob("kernels/*.pyx")) if (root / "setup.py").is_file() else []
    missing = [src.stem for src in sources
               if not any((package / "_cy" / (src.stem + suffix)).is_file() for suffix in EXTENSION_SUFFIXES)]
    if not missing:
        return None
    return (f"kfrtrl: the compiled kernels of the source checkout {root} are not built; run "
            f"`pip install -e .` there (or `python setup.py build_ext --inplace`)")


def known_backends():
    """All backend names, available or not, plus "auto".

    Returns
    -------
    list of str
    """
    return sorted(_MODULES) + ["auto"]


def available_backends():
    """Names of the backends that import on this machine (each has every kernel of the reference).

    Returns
    -------
    list of str
        In registration order; always includes "numpy".
    """
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


def get_backend(backend, preference=()):
    """Resolve a backend name to its kernel module.

    Parameters
    ----------
    backend : str
        One of :func:`known_backends`. "auto" takes the first available backend of
        ``preference``, with a one-line warning when an earlier one is missing, and numpy
        when none is available.
    preference : sequence of str
        Backend names in order (an estimator's ``auto_backends``: its measured best first).

    Returns
    -------
    name : str
        The backend resolved.
    module : module
        Its kernels, with the names and signatures of :mod:`kfrtrl._reference`.

    Raises
    ------
    ImportError
        An explicitly named backend that is not available here.
    ValueError
        An unknown name.
    """
    if backend not in _MODULES and backend != "auto":
        raise ValueError(f"backend: expected one of {known_backends()}, got {backend!r}")
    if backend == "auto":
        return _auto(preference)
    try:
        return backend, _load(backend)
    except ImportError as exc:
        raise ImportError(f"backend: {backend!r} is not available here ({exc})") from exc


def _auto(preference):
    """(name, module) of the first available backend of ``preference``, else numpy.

    Cython missing from an unbuilt checkout is not warned about again: importing kfrtrl said so.
    """
    first_error = None
    for name in preference:
        try:
            module = _load(name)
        except ImportError as exc:
            if not (name == "cython" and unbuilt_checkout_hint()):
                first_error = first_error or f"backend {name!r} unavailable ({exc})"
            continue
        if first_error:
            warnings.warn(f"kfrtrl: {first_error}; using {name!r}", stacklevel=4)
        return name, module
    if first_error:
        warnings.warn(f"kfrtrl: {first_error}; using 'numpy'", stacklevel=4)
    return "numpy", _load("numpy")


def show_config(file=None):
    """Print version, backends, OpenMP, BLAS and thread counts (what a bug report needs).

    Parameters
    ----------
    file : file object or None
        Where to print (None: standard output).
    """
    import os
    import platform

    import numpy as np
    from threadpoolctl import threadpool_info

    from . import __version__
    from .estimators import ESTIMATORS

    lines = [
        f"kfrtrl {__version__}  python {platform.python_version()}  numpy {np.__version__}",
        f"cores: {os.cpu_count()}",
        f"backends available: {', '.join(available_backends())} (known: {', '.join(known_backends())})",
        "auto picks: " + ", ".join(f"{name}: {' > '.join(cls.auto_backends + ('numpy',))}"
                                   for name, cls in sorted(ESTIMATORS.items())),
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
