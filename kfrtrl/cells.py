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

where ``Λ_l`` (batch, S, S, n) and ``D_l = ∂s_l/∂z_l`` (batch, S, Z, n) are
*block-diagonal*: the state is S blocks of n units, z is Z blocks of n
units, and block (I, J) is ``diag(lam[b, I, J])``. So the Elman cell is one
layer with S = Z = 1, an LSTM one layer with S = 2, Z = 4, an RHN of depth L
L layers with S = 1, Z = 2. ``H_t = J_K ⋯ J_1``.

From that description the base class :class:`Cell` derives everything the
estimators need, so no estimator special-cases a cell:

- ``forward(s, x) -> (s_new, cache)``
- ``jvp(cache, V, ops, n_threads) -> H_t V`` for a stack of state tangents V (batch, K, N)
  (one shared GEMM per layer for the whole batch and all K tangents)
- ``vjp(cache, c) -> H_tᵀ c`` for c (batch, N)
- ``immediate(cache, ops, n_threads) -> {name: (Dt, a)}``: the immediate term of each weight
  matrix as one Kronecker term, ``Dt`` (batch, p, N) holding the tangents
  ``∂s_t/∂z_i`` as rows, and ``a`` (batch, m).

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


@dataclass
class Layer:
    """One Jacobian layer of a step (see the module docstring).

    name: parameter name of W_l; a: (batch, m) input vector; lam: (batch, S, S, n);
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

    def jvp(self, cache, V, ops, n_threads=1):
        """H_t V for V (batch, K, n_state); ``ops`` is a backend's kernel module."""
        for layer in cache:
            V = self._layer_jvp(layer, V, ops, n_threads)
        return V

    def _layer_jvp(self, layer, V, ops, n_threads):
        W = self._params[layer.name]
        n_rec = layer.rec.stop - layer.rec.start
        out = np.empty_like(V)
        ops.jvp_blocks(V, V[:, :, layer.rec], W[:, :n_rec].T, layer.lam, layer.dz, out, n_threads)
        return out

    def vjp(self, cache, c):
        """H_tᵀ c for c (batch, n_state)."""
        for layer in reversed(cache):
            c = self._layer_vjp(layer, c)
        return c

    def _layer_vjp(self, layer, c):
        B, S, Z, n = layer.dz.shape
        W = self._params[layer.name]
        n_rec = layer.rec.stop - layer.rec.start
        cb = c.reshape(B, S, n)
        out = np.einsum("bijn,bin->bjn", layer.lam, cb).reshape(B, S * n)
        gz = np.einsum("bizn,bin->bzn", layer.dz, cb).reshape(B, Z * n)
        out[:, layer.rec] += gz @ W[:, :n_rec]
        return out

    def immediate(self, cache, ops, n_threads=1):
        """{name: (Dt (batch, p, n_state), a (batch, m))}: ∂s_t/∂z rows and inputs."""
        result = {}
        for idx, layer in enumerate(cache):
            Dt = _dense_blocks(layer.dz)
            for later in cache[idx + 1:]:
                Dt = self._layer_jvp(later, Dt, ops, n_threads)
            result[layer.name] = (Dt, layer.a)
        return result


def _dense_blocks(dz):
    """(batch, S, Z, n) block-diagonal ∂s/∂z -> dense tangent rows (batch, Z*n, S*n)."""
    B, S, Z, n = dz.shape
    Dt = np.zeros((B, Z, n, S, n), dtype=dz.dtype)
    idx = np.arange(n)
    Dt[:, :, idx, :, idx] = np.moveaxis(dz, 3, 0).transpose(0, 1, 3, 2)
    return Dt.reshape(B, Z * n, S * n)


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
        gen = as_generator(rng)
        n, d = self.n_hidden, self.n_in
        W = np.zeros((n, n + d + 1), dtype=self.dtype)
        W[:, :n] = gen.standard_normal((n, n)) / np.sqrt(n)
        W[:, n:n + d] = gen.standard_normal((n, d)) / np.sqrt(d)
        self._params = {"W": W}

    @property
    def W(self):
        return self._params["W"]

    def _layers(self, s, x):
        B, n = s.shape
        f, fprime = _ACTIVATIONS[self.activation]
        a = np.concatenate([s, x, np.ones((B, 1), dtype=self.dtype)], axis=1)
        y = f(a @ self.W.T)
        s_new = (1.0 - self.alpha) * s + self.alpha * y
        lam = np.full((B, 1, 1, n), 1.0 - self.alpha, dtype=self.dtype)
        dz = (self.alpha * fprime(y)).reshape(B, 1, 1, n)
        return s_new, [Layer("W", a, lam, dz, slice(0, n))]
