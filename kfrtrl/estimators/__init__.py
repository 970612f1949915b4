"""The estimators, one module per algorithm."""
from .kf import KFRTRL
from .nobacktrack import NoBackTrack
from .ok import OK
from .rflo import RFLO
from .rtrl import RTRL
from .snap1 import SnAp1
from .tbptt import TBPTT, bptt
from .uoro import UORO

__all__ = ["RTRL", "UORO", "KFRTRL", "OK", "NoBackTrack", "SnAp1", "RFLO", "TBPTT", "bptt"]
