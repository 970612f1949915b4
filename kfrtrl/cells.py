"""Recurrent cells in the Kronecker class.

The interface estimators use
----------------------------
A cell maps a state ``s`` (batch, n_state) and an input ``x`` (batch, n_in)
to a new state. It is described to the estimators as a chain of *Jacobian
layers*: ``s_t = L_K(... L_1(s_{t-1}, x_t))``. Layer ``l`` computes
``z_l = W_l a_l`` with one weight matrix ``W_l`` (p_l, m_l) whose columns
``[:n_rec]`` multiply the recurrent part ``s_{l-1}[rec]`` of its input vector
``a_l`` (batch, m_l), and its Jacobian with respect to the previous state is

    J_l = Λ_l + D_l R_l,     R_l = W_l[:, :n_rec] acting on s_{l-1}[rec]

where ``Λ_l`` (batch, S, S_in, n) and ``D_l = ∂s_l/∂z_l`` (batch, S, Z, n) are
*block-diagonal*: the layer's input state is S_in blocks of n units, its
output state S blocks, z is Z blocks of n units, and block (I, J) is
``diag(lam[b, I, J])``. So the Elman cell is one layer with S = S_in = Z = 1,
an LSTM one layer with S = S_in = 2, Z = 4, an RHN of depth L L layers with
S = S_in = 1, Z = 2, and a GRU two layers, n -> 3n (S_in = 1, S = 3, Z = 2)
then 3n -> n (S_in = 3, S = 1, Z = 1): the intermediate "state" carries what
the second layer needs. ``H_t = J_K ⋯ J_1``; the first layer's input and the
last layer's output are the cell state (n_state = N).

Parameter names: one weight matrix per layer, ``"W"`` for single-matrix
cells (Elman, LSTM, RHN of depth 1), ``"W0"`` … ``"W{L-1}"`` for the micro-
layers of a deeper RHN, ``"W"`` and ``"Wc"`` for the GRU's gates and
candidate.

From that description the base class :class:`Cell` derives everything the
estimators need, so no estimator special-cases a cell:

- ``forward(s, x) -> (s_new, cache)``
- ``jvp(cache, V, ops, n_threads) -> H_t V`` for a stack of state tangents V (batch, K, N)
  (one shared GEMM per layer for the whole batch and all K tangents)
- ``vjp(cache, c) -> H_tᵀ c`` for c (batch, N), and ``backward(cache, c)``, which also
  returns each weight matrix's cotangent ``(M_l D_l)ᵀ c`` (BPTT, TBPTT, UORO)
- ``immediate(cache, ops, n_threads) -> {name: (Dt, a)}``: the immediate term of each weight
  matrix as one Kronecker term, ``Dt`` (batch, p, N) holding the tangents
  ``∂s_t/∂z_i`` as rows, and ``a`` (batch, m). For layer l that is
  ``M_l D_l`` with ``M_l = J_K ⋯ J_{l+1}``, applied by the later layers' jvp.

A new cell only sets ``n_in``, ``n_hidden``, ``n_state``, ``dtype``, ``out``
(the slice of the state that is h) and ``_params`` ({name: W_l}), and
implements ``_layers(s, x) -> (s_new, [Layer, ...])``.

Tangent layout: the influence of weight ``W[i, j]`` on the state is a
vector of length N; estimators store stacks of such vectors with N last.
"""
from dataclasses import dataclass

import numpy as np

from ._validation import as_generator, check_choice, check_dtype, check_float, check_int

_ACTIVATIONS = {
    "tanh": (np.tanh, lambda y: 1.0 - y * y),
    "sigmoid": (lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)), lambda y: y * (1.0 - y)),
}


# RHN candidates as tanh(scale · z): "sigmoid" is 2σ(z) − 1 = tanh(z / 2).
_CANDIDATE_SCALE = {"tanh": 1.0, "sigmoid": 0.5}


@dataclass
class Layer:
    """One Jacobian layer of a step (see the module docstring).

    name: parameter name of W_l; a: (batch, m) input vector; lam: (batch, S, S_in, n);
    dz: (batch, S, Z, n); rec: slice of the layer's input state that W_l[:, :n_rec] reads.
    """

    name: str
    a: np.ndarray
    lam: np.ndarray
    dz: np.ndarray
    rec: slice


class Cell:
    """Base class: subclasses set the attributes below and implement ``_layers``.

    Attributes
    ----------
    n_in, n_hidden, n_state : int
    dtype : numpy.dtype (float32 or float64)
    out : slice of the state that is the hidden output h
    """

    def params(self):
        """Live parameter arrays by name; writing into them changes the cell."""
        return dict(self._params)

    def param_shapes(self):
        """{name: (p, m)} of every weight matrix."""
        return {k: v.shape for k, v in self._params.items()}

    def initial_state(self, batch_size):
        """Zero state, (batch_size, n_state)."""
        return np.zeros((batch_size, self.n_state), dtype=self.dtype)

    def forward(self, s, x):
        """One step. s (batch, n_state), x (batch, n_in) -> (s_new, cache)."""
        s_new, layers = self._layers(s, x)
        return s_new, layers

    def jvp(self, cache, V, ops, n_threads=1, out=None):
        """H_t V for V (batch, K, n_state); ``ops`` is a backend's kernel module.

        ``out``: optional (batch, K, n_state) array, not overlapping V, that receives the
        result (reusing a buffer saves a fresh allocation per step). Each sample's
        (K, n_state) block must be C-contiguous; the batch stride is free (e.g. the first
        rows of a larger per-sample stack).
        """
        for idx, layer in enumerate(cache):
            V = self._layer_jvp(layer, V, ops, n_threads, out if idx == len(cache) - 1 else None)
        return V

    def _layer_jvp(self, layer, V, ops, n_threads, out=None):
        W = self._params[layer.name]
        n_rec = layer.rec.stop - layer.rec.start
        B, S, _, n = layer.dz.shape
        if out is None:
            out = np.empty((B, V.shape[1], S * n), dtype=V.dtype)
        ops.jvp_blocks(V, V[:, :, layer.rec], W[:, :n_rec].T, layer.lam, layer.dz, out, n_threads)
        return out

    def diagonal_step(self, cache):
        """``(name, lam, dz, a)`` when the step is one layer with a diagonal structure, else None.

        That is: the step Jacobian is ``H_b = diag(lam_b) + diag(dz_b) W[:, :N]`` for the
        cell's only weight ``W = params()[name]`` (N, m), whose immediate term is then
        ``diag(dz_b) ⊗ a_b`` (the Elman cell). lam, dz : (batch, N); a : (batch, m).
        Estimators run such a step in one fused kernel (``kf_fused``, ``ok_fused``, ``uoro_fused``).
        """
        if len(cache) != 1:
            return None
        layer = cache[0]
        B, S, Z, n = layer.dz.shape
        if (S, Z, layer.lam.shape[2], n) != (1, 1, 1, self.n_state) or layer.rec != slice(0, n):
            return None
        return layer.name, layer.lam.reshape(B, n), layer.dz.reshape(B, n), layer.a

    def vjp(self, cache, c):
        """H_tᵀ c for c (batch, n_state)."""
        return self.backward(cache, c)[0]

    def backward(self, cache, c, state=True):
        """One reverse sweep from the state cotangent c (batch, n_state).

        Returns ``(H_tᵀ c, {name: (g, a)})`` with g (batch, p) = (M_l D_l)ᵀ c, the
        cotangent of z_l, and a (batch, m) the layer's input: the weight gradient of
        this step is ``Σ_b outer(g[b], a[b])``. O(N·m) per sample, no dense Jacobian.
        ``state=False`` skips the first layer's part of H_tᵀ c (a product with its
        weights) and returns None in its place, for callers that need only the g's.
        """
        proj = {}
        for idx, layer in enumerate(reversed(cache)):
            c, gz = self._layer_vjp(layer, c, state or idx < len(cache) - 1)
            proj[layer.name] = (gz, layer.a)
        return c, proj

    def _layer_vjp(self, layer, c, state=True):
        """(J_lᵀ c, D_lᵀ c) for the cotangent c (batch, S*n) of the layer's output (None, D_lᵀ c
        without ``state``)."""
        B, S, Z, n = layer.dz.shape
        cb = c.reshape(B, S, n)
        gz = np.einsum("bizn,bin->bzn", layer.dz, cb).reshape(B, Z * n)
        if not state:
            return None, gz
        W = self._params[layer.name]
        n_rec = layer.rec.stop - layer.rec.start
        out = np.einsum("bijn,bin->bjn", layer.lam, cb).reshape(B, layer.lam.shape[2] * n)
        out[:, layer.rec] += gz @ W[:, :n_rec]
        return out, gz

    def immediate(self, cache, ops, n_threads=1, out=None):
        """{name: (Dt (batch, p, n_state), a (batch, m))}: ∂s_t/∂z rows and inputs.

        ``out``: optional {name: (batch, p, n_state) array} receiving Dt (the arrays then
        returned), each sample's block C-contiguous, as for :meth:`jvp`. They must hold
        zeros off the block diagonals of ∂s/∂z (a buffer zeroed once and written only
        by this method): where Dt is those blocks themselves (the last layer's weights),
        only their diagonals are written, which saves a pass over Dt per step.
        """
        result = {}
        for idx, layer in enumerate(cache):
            target = None if out is None else out[layer.name]
            later = cache[idx + 1:]
            Dt = _dense_blocks(layer.dz, None if later else target)
            for pos, nxt in enumerate(later):
                Dt = self._layer_jvp(nxt, Dt, ops, n_threads, target if pos == len(later) - 1 else None)
            result[layer.name] = (Dt, layer.a)
        return result


def _init_weight(gen, p, n_rec, n_x, dtype):
    """A (p, n_rec + n_x + 1) matrix [W_rec | W_x | b]: N(0, 1/n_rec), N(0, 1/n_x), zero bias."""
    W = np.zeros((p, n_rec + n_x + 1), dtype=dtype)
    W[:, :n_rec] = gen.standard_normal((p, n_rec)) / np.sqrt(n_rec)
    if n_x:
        W[:, n_rec:n_rec + n_x] = gen.standard_normal((p, n_x)) / np.sqrt(n_x)
    return W


def _weight_property(name):
    """Attribute for weight ``name``: reads the live array, assignment writes into it.

    In place, so that ``cell.W -= lr * g`` works and estimators keep seeing the live array.
    """

    def get(cell):
        if name not in cell._params:
            raise AttributeError(f"{name}: this cell has no weight {name!r}; it has {list(cell._params)}")
        return cell._params[name]

    def put(cell, value):
        W = get(cell)
        if np.shape(value) != W.shape:
            raise ValueError(f"{name}: expected shape {W.shape}, got {np.shape(value)}")
        W[...] = value

    return property(get, put, doc=f"Weight matrix {name!r} (live; assignment writes in place).")


def _check_sizes(cell, n_in, n_hidden, dtype):
    """Validate and set n_in, n_hidden and dtype on ``cell``."""
    cell.n_in = check_int("n_in", n_in, 1)
    cell.n_hidden = check_int("n_hidden", n_hidden, 1)
    cell.dtype = check_dtype("dtype", dtype)


def _sigmoid(z):
    """Logistic function, in the overflow-free tanh form; keeps z's dtype."""
    return _ACTIVATIONS["sigmoid"][0](z)


def _dense_blocks(dz, out=None):
    """(batch, S, Z, n) block-diagonal ∂s/∂z -> dense tangent rows (batch, Z*n, S*n).

    ``out``: optional (batch, Z*n, S*n) array holding zeros off the block diagonals
    (per-sample blocks C-contiguous, so the 5-d reshape below is a view); only the
    diagonals are written. Returned.
    """
    B, S, Z, n = dz.shape
    if out is None:
        out = np.zeros((B, Z * n, S * n), dtype=dz.dtype)
    flat, row = out.reshape(B, Z * n * S * n), S * n
    for z in range(Z):
        for s in range(S):                      # block (z, s): entries (z n + i, s n + i)
            start = (z * row + s) * n
            flat[:, start:start + n * (row + 1):row + 1] = dz[:, s, z]
    return out


class Elman(Cell):
    """Leaky Elman cell ``h_t = (1 - α) h_{t-1} + α f(W [h_{t-1}; x_t; 1])``.

    Parameters
    ----------
    n_in, n_hidden : int
    alpha : float in (0, 1], the leak (1 = plain RNN)
    activation : "tanh" or "sigmoid"
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Initialisation: ``W_h ~ N(0, 1/n_hidden)`` (spectral radius ≈ 1),
    ``W_x ~ N(0, 1/n_in)``, ``b = 0``.

    Attributes
    ----------
    W : (n_hidden, n_hidden + n_in + 1) = [W_h | W_x | b], writable in place.
    """

    def __init__(self, n_in, n_hidden, alpha=1.0, activation="tanh", dtype=np.float64, rng=None):
        self.n_in = check_int("n_in", n_in, 1)
        self.n_hidden = self.n_state = check_int("n_hidden", n_hidden, 1)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0)
        if self.alpha == 0.0:
            raise ValueError("alpha: expected a real number in (0, 1], got 0.0")
        self.activation = check_choice("activation", activation, _ACTIVATIONS)
        self.dtype = check_dtype("dtype", dtype)
        self.out = slice(0, self.n_hidden)
        self._params = {"W": _init_weight(as_generator(rng), n_hidden, n_hidden, n_in, self.dtype)}

    W = _weight_property("W")

    def _layers(self, s, x):
        B, n = s.shape
        f, fprime = _ACTIVATIONS[self.activation]
        a = np.empty((B, n + self.n_in + 1), dtype=self.dtype)     # [s; x; 1] (faster than concatenate
        a[:, :n], a[:, n:-1], a[:, -1] = s, x, 1.0                 # at small sizes)
        y = f(a @ self.W.T)
        if self.alpha == 1.0:                   # plain RNN: skip the leak's exact no-ops
            s_new, dz = y, fprime(y)
        else:
            s_new = (1.0 - self.alpha) * s + self.alpha * y
            dz = self.alpha * fprime(y)
        lam = np.empty((B, 1, 1, n), dtype=self.dtype)
        lam.fill(1.0 - self.alpha)
        dz = dz.reshape(B, 1, 1, n)
        return s_new, [Layer("W", a, lam, dz, slice(0, n))]


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
