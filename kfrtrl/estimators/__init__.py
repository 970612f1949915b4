"""The estimators, one module per algorithm."""
from .kf import KFRTRL
from .nobacktrack import NoBackTrack
from .ok import OK
from .rtrl import RTRL
from .tbptt import TBPTT, bptt
from .uoro import UORO

__all__ = ["RTRL", "UORO", "KFRTRL", "OK", "NoBackTrack", "TBPTT", "bptt"]
