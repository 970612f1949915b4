"""Pure-numpy kernels: the ground truth every compiled backend is tested against."""
from .elementwise import ew_gradient, ew_propagate
from .propagate import jvp_blocks, jvp_dense, jvp_state, kf_combine, kf_fused, rank1_update, uoro_fused
from .reduce import ok_fused, ok_reduce
from .snap import snap1_gradient, snap1_step

__all__ = [
    "ew_gradient", "ew_propagate", "jvp_blocks", "jvp_dense", "jvp_state", "kf_combine", "kf_fused", "ok_fused", "ok_reduce", "rank1_update",
    "snap1_gradient", "snap1_step", "uoro_fused"]
