"""kfrtrl: online training of recurrent networks with the real-time recurrent learning family.

Cells (:class:`Elman`, :class:`RHN`, :class:`LSTM`, :class:`GRU`, the element-wise
:class:`ELSTM` and :class:`LRU`, and a :class:`Stack` of those; :mod:`kfrtrl.cells`) describe the
model; the estimators (one class per algorithm, :mod:`kfrtrl.estimators`) carry the influence
forward and turn ∂L_t/∂h_t into a parameter gradient; :func:`bptt` is the exact sequence-level gradient.
"""
import warnings as _warnings

from . import estimators
from .backends import available_backends, show_config, unbuilt_checkout_hint
from .cells import ELSTM, GRU, LRU, LSTM, RHN, Elman, Stack
from .estimators import *  # noqa: F401,F403  (every registered estimator class, and bptt)

__version__ = "0.1.0"

if unbuilt_checkout_hint():
    _warnings.warn(unbuilt_checkout_hint(), stacklevel=2)

__all__ = ["Elman", "RHN", "LSTM", "GRU", "ELSTM", "LRU", "Stack", *estimators.__all__, "available_backends",
           "show_config", "__version__"]
