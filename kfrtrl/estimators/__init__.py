"""The estimators, one module per algorithm, each registering itself (see :mod:`._registry`).

Every public module of this package is imported here, so a new estimator is
one new module; its class is then ``kfrtrl.estimators.<Class>`` (and
``kfrtrl.<Class>``) and its spec name works everywhere (training, ``kfrtrl``
command, benchmarks, checkpoints).
"""
import importlib
import pkgutil

from ._registry import (BENCH_DEFAULT, COMPARE_DEFAULT, ESTIMATORS, EXACT, NOISE_DEFAULT, TRAIN_DEFAULT,
                        canonical, describe_specs, make_estimator, names, param_default, parse_spec, register)
from .tbptt import bptt

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
del _module

globals().update({cls.__name__: cls for cls in ESTIMATORS.values()})

#: the estimator classes (by class name) and the exact sequence-level gradient
__all__ = sorted(cls.__name__ for cls in ESTIMATORS.values()) + ["bptt"]
