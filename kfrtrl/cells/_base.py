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

from .._validation import check_dtype, check_int

_ACTIVATIONS = {
    "tanh": (np.tanh, lambda y: 1.0 - y * y),
    "sigmoid": (lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)), lambda y: y * (1.0 - y)),
}


class _Step(list):
    """The cache of one step (:meth:`Cell.forward`): its Layers, and H_tᵀ (batch, N, N) once
    :meth:`Cell.jvp` has formed it (None before)."""

    jacobian_t = None


@dataclass
class Layer:
    """One Jacobian layer of a step (see the module docstring): what ``Cell._layers`` returns per weight.

    Parameters
    ----------
    name : str
        Parameter name of the layer's weight matrix W_l (p, m).
    a : ndarray (batch, m)
        The layer's input vector: z_l = W_l a.
    lam : ndarray (batch, S, S_in, n)
        Λ_l: block (I, J) is diag(lam[b, I, J]), the Jacobian of the layer's output state (S
        blocks of n units) with respect to its input state (S_in blocks) other than through W_l.
    dz : ndarray (batch, S, Z, n)
        D_l = ∂s_l/∂z_l, block-diagonal the same way (z has Z blocks of n units).
    rec : slice
        The part of the layer's input state that W_l[:, :n_rec] multiplies.
    """

    name: str
    a: np.ndarray
    lam: np.ndarray
    dz: np.ndarray
    rec: slice


class Cell:
    """Base class of every cell: a step described as a chain of Jacobian layers.

    A subclass sets the attributes below and implements one method,
    ``_layers(s, x) -> (s_new, [Layer, ...])``: the new state (batch, n_state) and, for each
    weight matrix, a :class:`Layer` giving its input ``a`` (z = W a), the diagonal blocks
    ``lam`` of ∂s_new/∂s other than through W and ``dz`` = ∂s_new/∂z. Forward, tangent and
    cotangent products, immediate terms, every estimator and backend and :func:`kfrtrl.bptt`
    follow from that (the README's "Write your own cell" has a tested example).

    Attributes
    ----------
    n_in, n_hidden, n_state : int
        Input size, output size (h) and state size (n_hidden, or more: the LSTM's [c; h]).
    dtype : numpy.dtype
        float32 or float64, of the state, the inputs and every parameter.
    out : slice
        The part of the state that is the output h.
    _params : dict of str to ndarray
        The weight matrices (p, m) by name, C-contiguous, of ``dtype``; ``params()`` returns
        the live arrays.

    Notes
    -----
    Cost: that of ``_layers`` (the forward pass) per step; what each estimator adds is in its
    own documentation.

    Examples
    --------
    >>> import numpy as np
    >>> from kfrtrl.cells import Cell, Layer
    >>> class Linear(Cell):                        # h_t = W [h_{t-1}; x_t; 1]
    ...     def __init__(self, n_in, n):
    ...         self.n_in, self.n_hidden, self.n_state, self.out = n_in, n, n, slice(0, n)
    ...         self.dtype, self._params = np.dtype(np.float64), {"W": np.eye(n, n + n_in + 1) / 2}
    ...     def _layers(self, h, x):
    ...         B, n = h.shape
    ...         a = np.concatenate([h, x, np.ones((B, 1))], axis=1)
    ...         lam, dz = np.zeros((B, 1, 1, n)), np.ones((B, 1, 1, n))
    ...         return a @ self._params["W"].T, [Layer("W", a, lam, dz, slice(0, n))]
    >>> import kfrtrl
    >>> est = kfrtrl.OK(Linear(2, 3), rank=1, batch_size=2, rng=0)
    >>> est.step(np.ones((2, 2))).shape
    (2, 3)
    """

    def params(self):
        """Live parameter arrays by name; writing into them changes the cell."""
        return dict(self._params)

    def param_shapes(self):
        """{name: (p, m)} of every weight matrix."""
        return {k: v.shape for k, v in self._params.items()}

    def initial_state(self, batch_size):
        """Zero state.

        Parameters
        ----------
        batch_size : int >= 1

        Returns
        -------
        (batch_size, n_state) array of ``dtype``
        """
        return np.zeros((batch_size, self.n_state), dtype=self.dtype)

    def forward(self, s, x):
        """One step; cost that of ``_layers``.

        Parameters
        ----------
        s : (batch, n_state) array of ``dtype``
        x : (batch, n_in) array of ``dtype``

        Returns
        -------
        s_new : (batch, n_state) array
        cache : list of Layer
            What :meth:`jvp`, :meth:`vjp`, :meth:`backward` and :meth:`immediate` take.
        """
        s_new, layers = self._layers(s, x)
        return s_new, _Step(layers)

    def jvp(self, cache, V, ops, n_threads=1, out=None):
        """H_t V: the step Jacobian applied to a stack of state tangents.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        V : (batch, K, n_state) array of ``dtype``
        ops : module, a backend's kernels (:func:`kfrtrl.backends.get_backend`)
        n_threads : int >= 1
        out : (batch, K, n_state) array or None
            Receives the result (reusing a buffer saves a fresh allocation per step); not
            overlapping V. Each sample's (K, n_state) block must be C-contiguous; the batch
            stride is free (e.g. the first rows of a larger per-sample stack).

        Returns
        -------
        (batch, K, n_state) array

        Notes
        -----
        Cost: layer by layer, one GEMM of 2·batch·K·n_rec·p_l flops per layer l; through the
        formed step Jacobian (:meth:`dense_route`), one (K, N) @ (N, N) GEMM per sample, after
        forming H_t once per step.
        """
        if self.dense_route(cache, V.shape[1]):
            if out is None:
                out = np.empty(V.shape, dtype=V.dtype)
            ops.jvp_dense(V, self.jacobian_t(cache, ops, n_threads), out, n_threads)
            return out
        return self._layers_jvp(cache, V, ops, n_threads, out)

    def _layers_jvp(self, cache, V, ops, n_threads, out=None):
        """H_t V layer by layer (:meth:`jvp`'s layer path)."""
        for idx, layer in enumerate(cache):
            V = self._layer_jvp(layer, V, ops, n_threads, out if idx == len(cache) - 1 else None)
        return V

    def dense_route(self, cache, K):
        """True when :meth:`jvp` of K tangents goes through the formed step Jacobian H_t (N, N).

        Layer by layer a tangent costs c = Σ_l n_rec_l p_l multiply-adds; through H_t it
        costs N², and forming H_t costs N c once per step (the N tangents e_i through the
        layers; the result stays in ``cache`` for the step's other calls). So the formed
        Jacobian is used when c > N² and, unless it is formed already, K (c − N²) > N c:
        for many tangents (KF, OK, exact RTRL) of the GRU (c = 3 N²) and of the RHN of depth
        L (c = 2 L N²; at depth 1 KF and OK run their fused kernel instead, see
        :meth:`diagonal_step`). The Elman cell (c = N²) and the LSTM (c = 4n · n = N²) stay
        layer by layer.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        K : int, the number of tangents

        Returns
        -------
        bool
        """
        N = self.n_state
        c = sum(layer.dz.shape[2] * layer.dz.shape[3] * (layer.rec.stop - layer.rec.start) for layer in cache)
        if c <= N * N:
            return False
        return getattr(cache, "jacobian_t", None) is not None or K * (c - N * N) > N * c

    def jacobian_t(self, cache, ops, n_threads=1):
        """The step Jacobian, transposed, per sample: H_tᵀ (batch, N, N), row i = H_t e_i.

        Formed once per step (the N tangents e_i through the layers, one GEMM per layer) and
        kept in ``cache`` for the step's later calls (:meth:`jvp`'s formed route, exact RTRL).

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        ops : module, a backend's kernels
        n_threads : int >= 1

        Returns
        -------
        (batch, n_state, n_state) array of ``dtype``
        """
        Ht = getattr(cache, "jacobian_t", None)
        if Ht is None:
            B, N = cache[0].a.shape[0], self.n_state
            eye = np.broadcast_to(np.eye(N, dtype=self.dtype), (B, N, N)).copy()
            Ht = self._layers_jvp(cache, eye, ops, n_threads)
            if isinstance(cache, _Step):
                cache.jacobian_t = Ht
        return Ht

    def _layer_jvp(self, layer, V, ops, n_threads, out=None):
        W = self._params[layer.name]
        n_rec = layer.rec.stop - layer.rec.start
        B, S, _, n = layer.dz.shape
        if out is None:
            out = np.empty((B, V.shape[1], S * n), dtype=V.dtype)
        ops.jvp_blocks(V, V[:, :, layer.rec], W[:, :n_rec].T, layer.lam, layer.dz, out, n_threads)
        return out

    def diagonal_step(self, cache):
        """``(name, lam, dz, a)`` when the step is one layer with diagonal blocks, else None.

        That is: the step Jacobian is ``H_b = diag(lam_b) + Σ_z diag(dz_bz) W[z N:(z+1) N, :N]``
        for the cell's only weight ``W = params()[name]`` (Z N, m), whose immediate term is then
        ``D_b ⊗ a_b`` with D_b the diagonal blocks diag(dz_bz) stacked: the Elman cell (Z = 1)
        and the RHN of depth 1 (Z = 2). lam : (batch, N); dz : (batch, Z, N); a : (batch, m).
        Estimators run such a step in one fused kernel (``kf_fused``, ``ok_fused``; ``uoro_fused``
        for Z = 1): H_b costs Z N² multiply-adds per sample, after which the K tangents need
        K N² instead of the layer path's K Z N², so the fused route is the cheaper one from K > Z.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`

        Returns
        -------
        tuple (str, array, array, array) or None
        """
        if len(cache) != 1:
            return None
        layer = cache[0]
        B, S, Z, n = layer.dz.shape
        if (S, layer.lam.shape[2], n) != (1, 1, self.n_state) or layer.rec != slice(0, n):
            return None
        return layer.name, layer.lam.reshape(B, n), layer.dz.reshape(B, Z, n), layer.a

    def vjp(self, cache, c):
        """H_tᵀ c: the transposed step Jacobian applied to a state cotangent; cost O(N·m) per sample.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        c : (batch, n_state) array of ``dtype``

        Returns
        -------
        (batch, n_state) array
        """
        return self.backward(cache, c)[0]

    def backward(self, cache, c, state=True):
        """One reverse sweep from the state cotangent c (batch, n_state).

        Returns ``(H_tᵀ c, {name: (g, a)})`` with g (batch, p) = (M_l D_l)ᵀ c, the
        cotangent of z_l, and a (batch, m) the layer's input: the weight gradient of
        this step is ``Σ_b outer(g[b], a[b])``. O(N·m) per sample, no dense Jacobian.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        c : (batch, n_state) array of ``dtype``
        state : bool
            False skips the first layer's part of H_tᵀ c (a product with its weights) and
            returns None in its place, for callers that need only the g's.

        Returns
        -------
        H_tᵀ c : (batch, n_state) array or None
        projections : dict of str to (g, a)
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

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        ops : module, a backend's kernels
        n_threads : int >= 1
        out : dict of str to (batch, p, n_state) array, or None

        Returns
        -------
        dict of str to (Dt, a)
            Dt (batch, p, n_state), a (batch, m), per weight name.

        Notes
        -----
        Cost: the later layers' jvp applied to p tangents per layer (one GEMM each).
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
