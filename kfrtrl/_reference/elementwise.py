"""Reference kernels of exact RTRL on element-wise cells.

An element-wise cell (:class:`kfrtrl.cells.ELSTM`, :class:`kfrtrl.cells.LRU`)
has a diagonal recurrence: unit k of its recurrent state r reads only its own
r_{t-1}[k] and its own rows of the parameters. For a weight W (Z n, m) whose
row ``z n + k`` feeds unit k, the influence ``∂r_t/∂W`` is therefore zero
except ``E[z, k, :] = ∂r_t[k]/∂W[z n + k, :]``, and exact RTRL reduces to::

    E_t[z, k, :] = lam_t[k] E_{t-1}[z, k, :] + dz_t[z, k] a_t
    ∂L_t/∂W[z n + k, :] = c_r[k] E_t[z, k, :]

with ``lam_t[k] = ∂r_t[k]/∂r_{t-1}[k]``, ``dz_t[z, k] = ∂r_t[k]/∂z[z n + k]``
and ``c_r = ∂L_t/∂r_t``: O(Z n m) per sample for time and memory, the cost of
the forward pass (Irie, Gopalakrishnan & Schmidhuber, "Exploring the promise
and limits of real-time recurrent learning"). An element-wise parameter vector
is the same with m = 1 and its per-unit input folded into dz.
"""
import numpy as np


def ew_propagate(E, lam, dz, a, n_threads):
    """One step of the element-wise influence, in place.

    E : (B, Z, n, m), updated: ``E[b, z, k, :] = lam[b, k] E[b, z, k, :] + dz[b, z, k] a[b, :]``
    lam : (B, n);  dz : (B, Z, n);  a : (B, m).
    Cost O(B Z n m).
    """
    E *= lam[:, None, :, None]
    E += dz[:, :, :, None] * a[:, None, None, :]


def ew_gradient(E, c, out, n_threads):
    """The weight gradient summed over the batch: ``out[z, k, :] = Σ_b c[b, k] E[b, z, k, :]``.

    E : (B, Z, n, m);  c : (B, n), the cotangent of the recurrent state;
    out : (Z, n, m), written. Cost O(B Z n m).
    """
    out[...] = np.einsum("bk,bzkm->zkm", c, E)
