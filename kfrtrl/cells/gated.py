"""Gated cells: the recurrent highway network (RHN), the LSTM and the GRU.

Each is described by its Jacobian layers (see :mod:`kfrtrl.cells`); the
estimators need nothing else from them.
"""
import numpy as np

from .._validation import as_generator, check_choice, check_float, check_int
from ._base import Cell, Layer, _check_sizes, _init_weight, _sigmoid, _weight_property

# RHN candidates as tanh(scale · z): "sigmoid" is 2σ(z) − 1 = tanh(z / 2).
_CANDIDATE_SCALE = {"tanh": 1.0, "sigmoid": 0.5}


class RHN(Cell):
    """Recurrent highway network with a coupled carry gate, ``depth`` micro-layers per step.

    The cell of the OK authors' code at depth 1. Micro-layer l = 0 … L-1 maps
    s_l to s_{l+1}, with s_0 = h_{t-1} and h_t = s_L::

        a_0 = [s_0; x_t; 1],   a_l = [s_l; 1]  (l ≥ 1: the input enters layer 0 only)
        [z_c; z_g] = W_l a_l,  c̃ = tanh(z_c),  g = σ(z_g)
        s_{l+1} = g ⊙ s_l + (1 − g) ⊙ c̃

    With ``candidate="sigmoid"`` the candidate is c̃ = 2σ(z_c) − 1 = tanh(z_c / 2), the
    OK authors' code (half the candidate's gain at z = 0).

    One Jacobian layer per micro-layer (S = S_in = 1, Z = 2): Λ = diag(g),
    ∂s_{l+1}/∂z_c = (1 − g) c̃′ with c̃′ = 1 − c̃² (tanh) or (1 − c̃²)/2 (sigmoid),
    ∂s_{l+1}/∂z_g = (s_l − c̃) g (1 − g).

    Parameters
    ----------
    n_in, n_hidden : int >= 1
    depth : int >= 1, the number L of micro-layers
    candidate : "tanh" (default) or "sigmoid" (c̃ = 2σ(z_c) − 1)
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Parameter names (``params()``): depth 1: ``"W"`` (2n, n + n_in + 1) on
    [h; x; 1]; depth L > 1: ``"W0"`` (2n, n + n_in + 1) and ``"W1"`` …
    ``"W{L-1}"`` (2n, n + 1) on [s_l; 1]. Rows [:n] give z_c, rows [n:] z_g.
    Initialisation: recurrent columns N(0, 1/n), input columns N(0, 1/n_in),
    biases 0 (g = 1/2 at the start).

    Attributes
    ----------
    W : at depth 1, ``params()["W"]``, writable in place (deeper: use ``params()``).

    Notes
    -----
    Cost per step and sample: O(L · 2n (n + 1) + 2n n_in) time (one matrix-vector product per
    micro-layer) and O(L n) memory for the cache; estimators see L Jacobian layers.

    References
    ----------
    J. G. Zilly, R. K. Srivastava, J. Koutník and J. Schmidhuber, "Recurrent Highway Networks",
    ICML 2017 (arXiv:1607.03474).

    Examples
    --------
    >>> import kfrtrl
    >>> cell = kfrtrl.RHN(n_in=3, n_hidden=5, depth=2, rng=0)
    >>> {k: v.shape for k, v in cell.params().items()}
    {'W0': (10, 9), 'W1': (10, 6)}
    """

    W = _weight_property("W")

    def __init__(self, n_in, n_hidden, depth=1, dtype=np.float64, rng=None, candidate="tanh"):
        _check_sizes(self, n_in, n_hidden, dtype)
        self.depth = check_int("depth", depth, 1)
        self.candidate = check_choice("candidate", candidate, _CANDIDATE_SCALE)
        self.n_state = self.n_hidden
        self.out = slice(0, self.n_hidden)
        gen = as_generator(rng)
        n = self.n_hidden
        names = ["W"] if self.depth == 1 else [f"W{l}" for l in range(self.depth)]
        self._params = {
            name: _init_weight(gen, 2 * n, n, self.n_in if l == 0 else 0, self.dtype)
            for l, name in enumerate(names)
        }

    def _layers(self, s, x):
        B, n = s.shape
        one = np.ones((B, 1), dtype=self.dtype)
        layers = []
        for l, (name, W) in enumerate(self._params.items()):
            a = np.concatenate([s, x, one] if l == 0 else [s, one], axis=1)
            z = a @ W.T
            scale = _CANDIDATE_SCALE[self.candidate]
            c = np.tanh(scale * z[:, :n])
            g = _sigmoid(z[:, n:])
            dz = np.stack([(1.0 - g) * (scale * (1.0 - c * c)), (s - c) * g * (1.0 - g)], axis=1)
            layers.append(Layer(name, a, g.reshape(B, 1, 1, n), dz.reshape(B, 1, 2, n), slice(0, n)))
            s = g * s + (1.0 - g) * c
        return s, layers


class LSTM(Cell):
    """LSTM without peepholes; the state is s = [c; h] (2n), the output h.

    With a = [h_{t-1}; x_t; 1] and one weight matrix W (4n, n + n_in + 1)
    whose row blocks give the input, forget and output gates and the
    candidate::

        [z_i; z_f; z_o; z_g] = W a
        i, f, o = σ(z_i), σ(z_f), σ(z_o),   g̃ = tanh(z_g)
        c_t = f ⊙ c_{t-1} + i ⊙ g̃,          h_t = o ⊙ tanh(c_t)

    One Jacobian layer with S = S_in = 2, Z = 4, reading h (rec = [n, 2n)):
    Λ has ∂c_t/∂c_{t-1} = f and ∂h_t/∂c_{t-1} = o (1 − tanh² c_t) f.

    Parameters
    ----------
    n_in, n_hidden : int >= 1
    forget_bias : float in [-100, 100], initial bias of the forget gate
        (default 1: the cell starts by remembering)
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Initialisation: recurrent columns N(0, 1/n), input columns N(0, 1/n_in),
    biases 0 except the forget gate's, ``forget_bias``.

    Attributes
    ----------
    W : (4 n_hidden, n_hidden + n_in + 1), ``params()["W"]``, writable in place.

    Notes
    -----
    Cost per step and sample: O(4n (n + n_in)) time and O(n) memory; the state, and so every
    estimator's influence, has 2n entries (c and h).

    References
    ----------
    S. Hochreiter and J. Schmidhuber, "Long short-term memory", Neural Computation
    9(8):1735-1780, 1997. F. A. Gers, J. Schmidhuber and F. Cummins, "Learning to forget:
    continual prediction with LSTM", Neural Computation 12(10):2451-2471, 2000.

    Examples
    --------
    >>> import numpy as np, kfrtrl
    >>> cell = kfrtrl.LSTM(n_in=3, n_hidden=5, rng=0)
    >>> cell.W.shape, cell.n_state
    ((20, 9), 10)
    >>> est = kfrtrl.KFRTRL(cell, batch_size=2, rng=1)
    >>> est.step(np.ones((2, 3))).shape                # h only
    (2, 5)
    """

    def __init__(self, n_in, n_hidden, forget_bias=1.0, dtype=np.float64, rng=None):
        _check_sizes(self, n_in, n_hidden, dtype)
        self.forget_bias = check_float("forget_bias", forget_bias, -100.0, 100.0)
        n = self.n_hidden
        self.n_state = 2 * n
        self.out = slice(n, 2 * n)
        W = _init_weight(as_generator(rng), 4 * n, n, self.n_in, self.dtype)
        W[n:2 * n, -1] = self.forget_bias
        self._params = {"W": W}

    W = _weight_property("W")

    def _layers(self, s, x):
        B = s.shape[0]
        n = self.n_hidden
        c, h = s[:, :n], s[:, n:]
        a = np.concatenate([h, x, np.ones((B, 1), dtype=self.dtype)], axis=1)
        z = a @ self.W.T
        i, f, o = (_sigmoid(z[:, k * n:(k + 1) * n]) for k in range(3))
        g = np.tanh(z[:, 3 * n:])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        k = o * (1.0 - tc * tc)                   # ∂h_t/∂c_t
        dc = [g * i * (1.0 - i), c * f * (1.0 - f), np.zeros_like(c), i * (1.0 - g * g)]
        dh = [k * dc[0], k * dc[1], tc * o * (1.0 - o), k * dc[3]]
        dz = np.stack([np.stack(dc, axis=1), np.stack(dh, axis=1)], axis=1)
        zero = np.zeros_like(c)
        lam = np.stack([np.stack([f, zero], axis=1), np.stack([k * f, zero], axis=1)], axis=1)
        s_new = np.concatenate([c_new, o * tc], axis=1)
        return s_new, [Layer("W", a, lam, dz, slice(n, 2 * n))]


class GRU(Cell):
    """Gated recurrent unit (Cho et al. 2014: the reset gate acts before the product).

    With a = [h_{t-1}; x_t; 1], gate weights W (2n, n + n_in + 1) and
    candidate weights Wc (n, n + n_in + 1)::

        [z_r; z_u] = W a,   r = σ(z_r),  u = σ(z_u)
        c̃ = tanh(Wc [r ⊙ h_{t-1}; x_t; 1])
        h_t = (1 − u) ⊙ h_{t-1} + u ⊙ c̃

    Two Jacobian layers, since the candidate sees r ⊙ h: layer 1 (W) maps h
    to q = [h; r ⊙ h; u] (3n; Λ blocks 1, r, 0; ∂(r ⊙ h)/∂z_r = h r (1 − r),
    ∂u/∂z_u = u (1 − u)); layer 2 (Wc) reads q[n:2n] and maps q to h_t
    (Λ blocks 1 − u, 0, c̃ − h; ∂h_t/∂z_c = u (1 − c̃²)).

    Parameters
    ----------
    n_in, n_hidden : int >= 1
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Initialisation: recurrent columns N(0, 1/n), input columns N(0, 1/n_in), biases 0.

    Attributes
    ----------
    W : (2 n_hidden, n_hidden + n_in + 1), rows [:n] reset gate, [n:] update gate.
    Wc : (n_hidden, n_hidden + n_in + 1), the candidate. Both writable in place.

    Notes
    -----
    Cost per step and sample: O(3n (n + n_in)) time and O(n) memory; estimators see two
    Jacobian layers (the gates, then the candidate) and carry one influence per matrix.

    References
    ----------
    K. Cho, B. van Merriënboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk and
    Y. Bengio, "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
    Machine Translation", EMNLP 2014 (arXiv:1406.1078).

    Examples
    --------
    >>> import kfrtrl
    >>> cell = kfrtrl.GRU(n_in=3, n_hidden=5, rng=0)
    >>> cell.W.shape, cell.Wc.shape
    ((10, 9), (5, 9))
    """

    def __init__(self, n_in, n_hidden, dtype=np.float64, rng=None):
        _check_sizes(self, n_in, n_hidden, dtype)
        n = self.n_state = self.n_hidden
        self.out = slice(0, n)
        gen = as_generator(rng)
        self._params = {
            "W": _init_weight(gen, 2 * n, n, self.n_in, self.dtype),
            "Wc": _init_weight(gen, n, n, self.n_in, self.dtype),
        }

    W = _weight_property("W")

    Wc = _weight_property("Wc")

    def _layers(self, h, x):
        B, n = h.shape
        one = np.ones((B, 1), dtype=self.dtype)
        zero = np.zeros_like(h)
        a1 = np.concatenate([h, x, one], axis=1)
        z = a1 @ self.W.T
        r, u = _sigmoid(z[:, :n]), _sigmoid(z[:, n:])
        rh = r * h
        lam1 = np.stack([np.ones_like(h), r, zero], axis=1).reshape(B, 3, 1, n)
        dz1 = np.stack([zero, zero, h * r * (1.0 - r), zero, zero, u * (1.0 - u)], axis=1)
        a2 = np.concatenate([rh, x, one], axis=1)
        c = np.tanh(a2 @ self.Wc.T)
        lam2 = np.stack([1.0 - u, zero, c - h], axis=1).reshape(B, 1, 3, n)
        dz2 = (u * (1.0 - c * c)).reshape(B, 1, 1, n)
        layers = [
            Layer("W", a1, lam1, dz1.reshape(B, 3, 2, n), slice(0, n)),
            Layer("Wc", a2, lam2, dz2, slice(n, 2 * n)),
        ]
        return (1.0 - u) * h + u * c, layers
