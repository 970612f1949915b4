"""The registry of estimators: what each one is, read by training, benchmarks, checkpoints and the command.

An estimator declares itself in its own module, on its class (see
:class:`kfrtrl.estimators._base.Estimator`), and is added here by the
:func:`register` decorator::

    @register
    class OK(KroneckerSum):
        name = "ok"                           # spec name: "ok", "ok:4" (or "ok-4")
        param = "rank"                        # what the ":k" of a spec sets (None: no ":k")
        auto_backends = ("cython", "numba")   # backend="auto" tries these in order, then numpy
        dense_immediate = True                # carries earlier layers' immediate terms as tangents
        stacks = False                        # runs on a Stack of element-wise cells
        def tangents(self): ...               # K of the benchmarks' GEMM lower bound
        _state_attrs = ("_A", "_u")           # run state saved by state_dict()

The package imports every public module of :mod:`kfrtrl.estimators`, so a
new estimator is one new module (plus its tests); nothing else lists it.
The only lists of several names are the default selections of the
experiments below, which a new estimator may join.
"""
import inspect

from .._validation import check_choice, check_int

#: name -> estimator class, filled by :func:`register` as the modules are imported
ESTIMATORS = {}

#: the exact estimator that tables and noise measurements compare against
EXACT = "rtrl"
#: the estimators of the scaling benchmark (``kfrtrl bench``, bench/test_scaling.py), in table order
BENCH_DEFAULT = ("rtrl", "uoro", "kf", "ok-2", "ok-8", "nobacktrack", "tbptt-25")
#: the estimators whose gradient noise ``kfrtrl noise`` measures by default (the random, unbiased ones)
NOISE_DEFAULT = ("uoro", "nobacktrack", "kf", "ok:2", "ok:8")
#: the estimator ``kfrtrl copy`` and ``kfrtrl charlm`` train by default
TRAIN_DEFAULT = "ok"
#: the estimators ``kfrtrl compare`` trains by default
COMPARE_DEFAULT = ("ok:2", "kf", "uoro", "tbptt:25")


#: what every estimator's docstring shares: its "[shared parameters]" and "[step and gradient]"
#: lines are replaced by these (indented as the line) when :func:`register` adds the class
SHARED_DOC = {
    "[shared parameters]": """batch_size : int >= 1
    Samples carried in parallel, each with its own state, influence and random signs.
rng : None, int or numpy.random.Generator
    Source of every random draw (same seed, same draws on every backend).
backend : {"auto", "numpy", "numba", "cython"}
    Kernel backend (:func:`kfrtrl.available_backends`); "auto" picks the fastest built one.
n_threads : int >= 1 or None
    Threads for kernels, numba and BLAS inside each call (None: leave them at all cores).""",
    "[step and gradient]": """``step(x)`` takes x (batch_size, n_in) of the cell's dtype (float32 or float64) and returns
h_t (batch_size, n_hidden); ``gradient(dl_dh)`` takes ∂L_t/∂h_t (batch_size, n_hidden) and
returns {name: (p, m)} for every weight matrix of ``cell.params()``, summed over the batch.
``step(x, loss_grad=f)``: f(h_t) -> dl_dh is called before the influence moves, so that an
estimator that can (OK's fused step) brings the gradient's products with the step.""",
}


def _fill_shared_doc(doc):
    """``doc`` with each line holding only a key of :data:`SHARED_DOC` replaced by its text, indented alike."""
    lines = []
    for line in doc.split("\n"):
        key = line.strip()
        indent = line[:len(line) - len(line.lstrip())]
        if key in SHARED_DOC:
            lines.extend(indent + part for part in SHARED_DOC[key].split("\n"))
        else:
            lines.append(line)
    return "\n".join(lines)


def register(cls):
    """Class decorator: add the estimator ``cls`` (with its ``name`` and ``param``) to :data:`ESTIMATORS`
    and fill in the shared parts of its docstring (:data:`SHARED_DOC`)."""
    if not isinstance(cls.name, str) or not cls.name.isidentifier() or cls.name in ESTIMATORS:
        raise ValueError(f"register: expected a new identifier as the estimator's name, got {cls.name!r}")
    if cls.param is not None and cls.param not in inspect.signature(cls).parameters:
        raise ValueError(f"register: {cls.__name__} takes no argument {cls.param!r} (its param)")
    ESTIMATORS[cls.name] = cls
    if cls.__doc__:
        cls.__doc__ = _fill_shared_doc(cls.__doc__)
    return cls


def names():
    """The registered estimator names, sorted."""
    return tuple(sorted(ESTIMATORS))


def param_default(name):
    """(parameter name, default) of the ``:k`` of estimator ``name``, or (None, None) if it takes none."""
    cls = ESTIMATORS[name]
    if cls.param is None:
        return None, None
    return cls.param, inspect.signature(cls).parameters[cls.param].default


def parse_spec(spec):
    """``"ok:4"`` (or ``"ok-4"``) -> ("ok", 4); ``"uoro"`` -> ("uoro", None).

    Parameters
    ----------
    spec : str
        A registered name, optionally ``:k`` (or ``-k``) with an integer k >= 1 for an
        estimator taking one.

    Returns
    -------
    name : str
    k : int or None

    Raises
    ------
    ValueError
        On a bad spec (TypeError if not a string).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string such as 'uoro' or 'name:k', got {type(spec).__name__}")
    name, _, k = spec.replace("-", ":", 1).partition(":")
    check_choice("estimator", name, ESTIMATORS)
    if not k:
        return name, None
    if ESTIMATORS[name].param is None:
        raise ValueError(f"estimator: {name!r} takes no ':k' suffix, got {spec!r}")
    if not k.isdigit() or int(k) < 1:
        raise ValueError(f"estimator: expected {name}:k with an integer k >= 1, got {spec!r}")
    return name, int(k)


def canonical(spec):
    """The label of a spec: ``"ok:8"`` -> ``"ok-8"``, ``"uoro"`` -> ``"uoro"``.

    Parameters
    ----------
    spec : str
        An estimator spec, ``"name"`` or ``"name:k"`` (ValueError on a bad one).

    Returns
    -------
    str
    """
    name, k = parse_spec(spec)
    return name if k is None else f"{name}-{k}"


def describe_specs():
    """One line for help texts: every name, with ``:k`` and what k sets where it takes one."""
    parts = []
    for name in names():
        param, default = param_default(name)
        parts.append(name if param is None else f"{name}[:k] (k: {param}, default {default})")
    return ", ".join(parts)


def make_estimator(spec, cell, batch_size=1, rng=None, backend="auto", n_threads=None, **defaults):
    """Build an estimator from a spec string.

    Parameters
    ----------
    spec : str, a registered name (:func:`names`), optionally ``name:k`` (or ``name-k``)
        with k its parameter (:func:`param_default`: OK's rank, KF's chains, TBPTT's truncation, ...)
    cell : Cell
    batch_size, rng, backend, n_threads : passed to the estimator
    **defaults : parameter -> value used when the spec has no ``:k`` (e.g. ``rank=4``);
        ignored by estimators whose parameter is another one. TypeError for a keyword
        that no registered estimator takes as its parameter.

    Returns an :class:`kfrtrl.estimators._base.Estimator`.
    """
    known = {cls.param for cls in ESTIMATORS.values()} - {None}
    for key in defaults:
        if key not in known:
            raise TypeError(f"make_estimator: expected keywords among {sorted(known)}, got {key!r}")
    name, k = parse_spec(spec)
    cls = ESTIMATORS[name]
    kwargs = {"batch_size": batch_size, "rng": rng, "backend": backend, "n_threads": n_threads}
    if k is not None:
        kwargs[cls.param] = k
    elif cls.param in defaults:
        kwargs[cls.param] = check_int(cls.param, defaults[cls.param], 1)
    return cls(cell, **kwargs)
