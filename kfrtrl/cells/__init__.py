"""Recurrent cells in the Kronecker class (the interface: :mod:`kfrtrl.cells._base`).

:class:`Cell` and :class:`Layer` (the Jacobian-layer machinery every estimator
relies on) live in ``_base``; :class:`Elman` in ``elman``; the gated cells
:class:`RHN`, :class:`LSTM` and :class:`GRU` in ``gated``; the element-wise
cells :class:`ELSTM` and :class:`LRU` in ``elementwise`` and a :class:`Stack`
of them in ``stack``.
"""
from ._base import Cell, Layer
from .elementwise import ELSTM, LRU
from .elman import Elman
from .gated import GRU, LSTM, RHN
from .stack import Stack

__all__ = ["Cell", "Layer", "Elman", "RHN", "LSTM", "GRU", "ELSTM", "LRU", "Stack"]
