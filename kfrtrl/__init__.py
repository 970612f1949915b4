"""kfrtrl: online training of recurrent networks with the real-time recurrent learning family.

Cells (:class:`Elman`, :class:`RHN`, :class:`LSTM`, :class:`GRU`, the element-wise
:class:`ELSTM` and :class:`LRU`, and a :class:`Stack` of those) describe the model; estimators (:class:`RTRL`,
:class:`UORO`, :class:`KFRTRL`, :class:`OK`, :class:`NoBackTrack`,
:class:`TBPTT`) carry the influence forward and turn ∂L_t/∂h_t into a
parameter gradient; :func:`bptt` is the exact sequence-level gradient.
"""
import warnings as _warnings

from .backends import available_backends, show_config, unbuilt_checkout_hint
from .cells import GRU, LSTM, RHN, Elman
from .cells_elementwise import ELSTM, LRU
from .estimators import KFRTRL, OK, RFLO, RTRL, TBPTT, UORO, NoBackTrack, SnAp1, bptt
from .stack import Stack

__version__ = "0.1.0"

if unbuilt_checkout_hint():
    _warnings.warn(unbuilt_checkout_hint(), stacklevel=2)

__all__ = [
    "Elman", "RHN", "LSTM", "GRU", "ELSTM", "LRU", "Stack", "RTRL", "UORO", "KFRTRL", "OK", "NoBackTrack", "SnAp1", "RFLO", "TBPTT", "bptt",
    "available_backends", "show_config", "__version__",
]
