"""Reference kernels of the sparse influence estimators (SnAp-1, RFLO).

These estimators keep, for each weight ``W[i, j]``, only the S entries of the
influence that belong to the unit ``u = i mod n`` the row feeds (one per state
block of n units). One step is then a small (S, S) matrix per unit applied to
every stored S-vector, plus the immediate term: O(S² · parameters) per sample.
"""
import numpy as np


def snap1_step(G, T, D, a, n_threads):
    """Advance a unit-sparse influence by one step, in place.

    G : (B, p, m, S) influence; G[b, i, j, s] = ∂state[b, s n + u]/∂W[i, j], u = i mod n
    T : (B, n, S, S) per-unit block of the step Jacobian (n = T.shape[1] divides p)
    D : (B, p, S) the immediate tangents: row i's one-step influence on unit u's S entries
    a : (B, m) the weight matrix's input vector
    Written:  G[b, i, j] = T[b, u] @ G[b, i, j] + D[b, i] * a[b, j].
    Cost per sample: O(p m S²).
    """
    B, p, m, S = G.shape
    n = T.shape[1]
    Tp = np.tile(T, (1, p // n, 1, 1))                  # (B, p, S, S): row i gets T[b, i mod n]
    G[...] = np.einsum("bpst,bpmt->bpms", Tp, G) + D[:, :, None, :] * a[:, None, :, None]


def snap1_gradient(G, c, out, n_threads):
    """The weight gradient of a unit-sparse influence for the loss signal c.

    G : (B, p, m, S) as in :func:`snap1_step`;  c : (B, n, S) the state cotangent per unit
    (c[b, u, s] = ∂L/∂state[b, s n + u]);  out : (p, m), written:
        out[i, j] = Σ_b Σ_s G[b, i, j, s] c[b, i mod n, s].
    Cost: O(B p m S).
    """
    B, p, m, S = G.shape
    cp = np.tile(c, (1, p // c.shape[1], 1))            # (B, p, S)
    out[...] = np.einsum("bpms,bps->pm", G, cp)
