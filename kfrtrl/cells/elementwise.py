"""Element-wise recurrent cells: a diagonal recurrence and a feed-forward readout.

Both cells here have a recurrent state r of n units in which unit k reads only
r_{t-1}[k] and its own rows of the parameters, followed by a readout that
reads r_t and x_t but is not fed back. Their state is ``s = [r; h]`` (2n), the
output h. As Jacobian layers (see :mod:`kfrtrl.cells`) a step is

1. the recurrent layer, state [r; h] -> r_t: ``z = W a`` with a = the input
   part only (no recurrent columns, ``rec`` empty), Λ = [diag(λ), 0] (h is not
   read) and D = ∂r_t/∂z (Z blocks, diagonal); its element-wise parameter
   vectors (``diag``: shape (Z n, 1), entry i acting like an extra input of
   row i with per-sample value ``scale[b, i]``) have the immediate term of z's
   row i scaled by ``scale``;
2. the readout layer, r_t -> [r_t; h_t], one dense weight reading
   [r_t; x_t; 1].

So every estimator and ``bptt`` run on them unchanged, and exact RTRL needs
only the influence of the recurrent layer's parameters on r, one row per unit
(:mod:`kfrtrl._reference.elementwise`): the readout's weight gradient and the
path r_t -> h_t are the step's own backpropagation.
"""
from dataclasses import dataclass, field

import numpy as np

from .._validation import as_generator, check_float
from ._base import Cell, Layer, _check_sizes, _init_weight, _sigmoid, _weight_property


@dataclass
class ElementwiseLayer(Layer):
    """A recurrent layer with element-wise parameter vectors.

    Parameters
    ----------
    name, a, lam, dz, rec : as for :class:`kfrtrl.cells.Layer`
    diag : dict of str to (batch, p) array
        Per element-wise parameter vector, the scale its gradient takes from the layer's.
    """

    diag: dict = field(default_factory=dict)


class ElementwiseCell(Cell):
    """Base of the element-wise cells: state [r; h] (2n), out = h.

    Subclasses set the :class:`Cell` attributes and ``x_columns`` ({weight name:
    the slice of its input vector a that holds x_t}, for the input cotangent
    a stack passes down) and implement ``_layers`` returning
    ``[ElementwiseLayer, readout Layer]``.
    """

    #: exact RTRL carries one row of influence per unit (:class:`kfrtrl.RTRL`)
    elementwise = True

    def recurrent_names(self):
        """Names of the recurrent layer's parameters (those with an influence to carry)."""
        return [name for name in self._params if name not in self.readout_names()]

    def readout_names(self):
        """Names of the readout's weights (exact gradient from the step alone)."""
        return [self._readout]

    def _layer_jvp(self, layer, V, ops, n_threads, out=None):
        if layer.rec.stop > layer.rec.start:
            return super()._layer_jvp(layer, V, ops, n_threads, out)
        B, S, S_in, n = layer.lam.shape             # no recurrent weights: J = Λ only
        res = np.einsum("bijn,bkjn->bkin", layer.lam, V.reshape(B, V.shape[1], S_in, n))
        res = res.reshape(B, V.shape[1], S * n)
        if out is None:
            return res
        out[...] = res
        return out

    def immediate(self, cache, ops, n_threads=1, out=None):
        """As :meth:`Cell.immediate`, plus the element-wise vectors: ``(Dt[:, i] * scale[:, i], ones)``.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        ops : module, a backend's kernels
        n_threads : int >= 1
        out : dict of str to (batch, p, n_state) array, or None

        Returns
        -------
        dict of str to (Dt, a)
        """
        result = super().immediate(cache, ops, n_threads, out)
        layer = cache[0]
        Dt = result[layer.name][0]
        for name, scale in layer.diag.items():
            Dw = Dt * scale[:, :, None]
            if out is not None:
                out[name][...] = Dw
                Dw = out[name]
            result[name] = (Dw, np.ones((Dt.shape[0], 1), dtype=self.dtype))
        return result

    def backward(self, cache, c, state=True):
        """As :meth:`Cell.backward`, plus the element-wise vectors' ``(g * scale, ones)``.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        c : (batch, n_state) array of ``dtype``
        state : bool, as for :meth:`Cell.backward`

        Returns
        -------
        H_tᵀ c : (batch, n_state) array or None
        projections : dict of str to (g, a)
        """
        c_prev, proj = super().backward(cache, c, state)
        layer = cache[0]
        g = proj[layer.name][0]
        for name, scale in layer.diag.items():
            proj[name] = (g * scale, np.ones((g.shape[0], 1), dtype=self.dtype))
        return c_prev, proj

    def recurrent_terms(self, cache):
        """The element-wise influence's step: ``(lam (B, n), {name: (dz (B, Z, n), a (B, m))})``.

        For each recurrent parameter, ``E[z, k] <- lam[k] E[z, k] + dz[z, k] a``
        (:func:`kfrtrl._reference.elementwise.ew_propagate`).

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`

        Returns
        -------
        lam : (B, n) array
        terms : dict of str to (dz, a)
        """
        layer = cache[0]
        B, _, Z, n = layer.dz.shape
        dz = layer.dz[:, 0]
        terms = {layer.name: (dz, layer.a)}
        ones = np.ones((B, 1), dtype=self.dtype)
        for name, scale in layer.diag.items():
            terms[name] = (dz * scale.reshape(B, Z, n), ones)
        return layer.lam[:, 0, 0], terms

    def readout_backward(self, cache, c):
        """Back through the readout of this step: c (B, 2n) -> (c_r (B, n), {name: (g, a)}).

        c_r = ∂L/∂r_t along the readout (and the copy of r_t in the state); g (B, p)
        the cotangent of the readout's z and a its input, as in :meth:`Cell.backward`.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        c : (B, 2n) array, the state cotangent

        Returns
        -------
        c_r : (B, n) array
        projections : dict of str to (g, a)
        """
        proj = {}
        for layer in reversed(cache[1:]):
            c, gz = self._layer_vjp(layer, c)
            proj[layer.name] = (gz, layer.a)
        return c, proj

    def recurrent_cotangent(self, cache, c_r):
        """The cotangent of the recurrent layer's z for c_r = ∂L/∂r_t.

        Parameters
        ----------
        cache : list of Layer, from :meth:`forward`
        c_r : (B, n) array

        Returns
        -------
        (B, Z n) array
        """
        dz = cache[0].dz[:, 0]
        return (dz * c_r[:, None, :]).reshape(c_r.shape[0], -1)

    def input_cotangent(self, proj):
        """∂L/∂x_t along this step only.

        Parameters
        ----------
        proj : dict of str to (g, a), the projections of :meth:`backward` (the layers that read x)

        Returns
        -------
        (B, n_in) array (0.0 when no layer reads x)
        """
        total = 0.0
        for name, cols in self.x_columns.items():
            if name in proj:
                total = total + proj[name][0] @ self._params[name][:, cols]
        return total


class ELSTM(ElementwiseCell):
    """The element-wise ("quasi") LSTM of Irie, Gopalakrishnan & Schmidhuber.

    Its recurrence is diagonal: with a = [x_t; 1] and vectors w_z, w_f::

        z = tanh(W_z a + w_z ⊙ c_{t-1}),   f = σ(W_f a + w_f ⊙ c_{t-1})
        c_t = f ⊙ c_{t-1} + (1 − f) ⊙ z
        h_t = σ(W_o [c_t; x_t; 1]) ⊙ c_t        (a feed-forward output gate)

    State s = [c; h] (2n), output h. Exact RTRL costs O(n (n_in + 1)) per step
    for the recurrent parameters; the output gate's gradient needs no
    recurrence (its O(n²) is that of the forward pass).

    Parameters
    ----------
    n_in, n_hidden : int >= 1
    forget_bias : float in [-100, 100], initial bias of f (default 1: remember)
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Parameter names (``params()``): ``"W"`` (2n, n_in + 1) = [W_z; W_f] on
    [x; 1]; ``"w"`` (2n, 1) = [w_z; w_f]; ``"Wo"`` (n, n + n_in + 1) on
    [c_t; x_t; 1]. Initialisation: input columns N(0, 1/n_in), w ~ N(0, 1/4),
    recurrent columns of Wo N(0, 1/n), biases 0 except f's, ``forget_bias``.

    Notes
    -----
    Cost per step and sample: O(n (n + n_in)) time (the output gate's product; the recurrence
    itself is O(n (n_in + 1))) and O(n) memory. Exact element-wise RTRL
    (:class:`kfrtrl.RTRL`) costs the same as the forward pass.

    References
    ----------
    K. Irie, A. Gopalakrishnan and J. Schmidhuber, "Exploring the Promise and Limits of
    Real-Time Recurrent Learning", ICLR 2024 (arXiv:2305.19044).

    Examples
    --------
    >>> import kfrtrl
    >>> cell = kfrtrl.ELSTM(n_in=3, n_hidden=5, rng=0)
    >>> {k: v.shape for k, v in cell.params().items()}
    {'W': (10, 4), 'w': (10, 1), 'Wo': (5, 9)}
    """

    W = _weight_property("W")

    w = _weight_property("w")

    Wo = _weight_property("Wo")

    _readout = "Wo"

    def __init__(self, n_in, n_hidden, forget_bias=1.0, dtype=np.float64, rng=None):
        _check_sizes(self, n_in, n_hidden, dtype)
        self.forget_bias = check_float("forget_bias", forget_bias, -100.0, 100.0)
        n, d = self.n_hidden, self.n_in
        self.n_state = 2 * n
        self.out = slice(n, 2 * n)
        self.x_columns = {"W": slice(0, d), "Wo": slice(n, n + d)}
        gen = as_generator(rng)
        W = np.zeros((2 * n, d + 1), dtype=self.dtype)
        W[:, :d] = gen.standard_normal((2 * n, d)) / np.sqrt(d)
        W[n:, -1] = self.forget_bias
        w = (0.5 * gen.standard_normal((2 * n, 1))).astype(self.dtype)
        self._params = {"W": W, "w": w, "Wo": _init_weight(gen, n, n, d, self.dtype)}

    def _layers(self, s, x):
        B = s.shape[0]
        n = self.n_hidden
        c = s[:, :n]
        one = np.ones((B, 1), dtype=self.dtype)
        a1 = np.concatenate([x, one], axis=1)
        pre = a1 @ self.W.T + np.concatenate([c, c], axis=1) * self.w[:, 0]
        z, f = np.tanh(pre[:, :n]), _sigmoid(pre[:, n:])
        c_new = f * c + (1.0 - f) * z
        dz_z, dz_f = (1.0 - f) * (1.0 - z * z), (c - z) * f * (1.0 - f)
        lam = f + dz_z * self.w[:n, 0] + dz_f * self.w[n:, 0]
        zero = np.zeros_like(c)
        rec = ElementwiseLayer("W", a1, np.stack([lam, zero], axis=1).reshape(B, 1, 2, n),
                               np.stack([dz_z, dz_f], axis=1).reshape(B, 1, 2, n), slice(0, 0),
                               diag={"w": np.concatenate([c, c], axis=1)})
        a2 = np.concatenate([c_new, x, one], axis=1)
        o = _sigmoid(a2 @ self.Wo.T)
        readout = Layer("Wo", a2, np.stack([np.ones_like(o), o], axis=1).reshape(B, 2, 1, n),
                        np.stack([zero, c_new * o * (1.0 - o)], axis=1).reshape(B, 2, 1, n), slice(0, n))
        return np.concatenate([c_new, o * c_new], axis=1), [rec, readout]


class LRU(ElementwiseCell):
    """A real diagonal linear recurrent unit with a nonlinear readout (after Zucchet et al.'s online LRU).

    ::

        r_t = λ ⊙ r_{t-1} + B x_t,      λ = exp(−exp(ν)) ∈ (0, 1)
        h_t = tanh(C [r_t; x_t; 1])

    λ stays in (0, 1) for every real ν, so the recurrence is stable whatever
    the updates. State s = [r; h] (2n), output h.

    Parameters
    ----------
    n_in, n_hidden : int >= 1
    r_min, r_max : floats, 0 < r_min <= r_max < 1: λ is initialised uniformly in
        [r_min, r_max] (default 0.9 to 0.999, long memories)
    dtype : float32 or float64
    rng : None, int or numpy.random.Generator, for the initialisation

    Parameter names (``params()``): ``"B"`` (n, n_in), ``"nu"`` (n, 1), ``"C"``
    (n, n + n_in + 1) on [r_t; x_t; 1]. Initialisation: B's row k N(0, (1 − λ_k²)/n_in)
    (so r has unit scale for unit inputs), C as a recurrent weight (recurrent
    columns N(0, 1/n), input columns N(0, 1/n_in), bias 0).

    Notes
    -----
    Cost per step and sample: O(n (n + n_in)) time (the readout C; the recurrence is O(n n_in))
    and O(n) memory. Exact element-wise RTRL (:class:`kfrtrl.RTRL`) costs the same as the
    forward pass.

    References
    ----------
    A. Orvieto, S. L. Smith, A. Gu, A. Fernando, C. Gulcehre, R. Pascanu and S. De,
    "Resurrecting Recurrent Neural Networks for Long Sequences", ICML 2023 (arXiv:2303.06349).
    N. Zucchet, R. Meier, S. Schug, A. Mujika and J. Sacramento, "Online learning of long-range
    dependencies", NeurIPS 2023 (arXiv:2305.15947).

    Examples
    --------
    >>> import kfrtrl
    >>> cell = kfrtrl.LRU(n_in=3, n_hidden=5, rng=0)
    >>> {k: v.shape for k, v in cell.params().items()}
    {'B': (5, 3), 'nu': (5, 1), 'C': (5, 9)}
    """

    B = _weight_property("B")

    nu = _weight_property("nu")

    C = _weight_property("C")

    _readout = "C"

    def __init__(self, n_in, n_hidden, r_min=0.9, r_max=0.999, dtype=np.float64, rng=None):
        _check_sizes(self, n_in, n_hidden, dtype)
        self.r_min = check_float("r_min", r_min, 1e-6, 1.0 - 1e-6)
        self.r_max = check_float("r_max", r_max, self.r_min, 1.0 - 1e-6)
        n, d = self.n_hidden, self.n_in
        self.n_state = 2 * n
        self.out = slice(n, 2 * n)
        self.x_columns = {"B": slice(0, d), "C": slice(n, n + d)}
        gen = as_generator(rng)
        lam = gen.uniform(self.r_min, self.r_max, n)
        B = gen.standard_normal((n, d)) * np.sqrt((1.0 - lam * lam) / d)[:, None]
        nu = np.log(-np.log(lam))[:, None]
        self._params = {"B": B.astype(self.dtype), "nu": nu.astype(self.dtype),
                        "C": _init_weight(gen, n, n, d, self.dtype)}

    def _layers(self, s, x):
        B = s.shape[0]
        n = self.n_hidden
        r = s[:, :n]
        e = np.exp(self.nu[:, 0])
        lam = np.exp(-e)
        r_new = lam * r + x @ self.B.T
        zero = np.zeros_like(r)
        ones = np.ones_like(r)
        lam_blocks = np.stack([np.broadcast_to(lam, r.shape), zero], axis=1).reshape(B, 1, 2, n)
        rec = ElementwiseLayer("B", x.copy(), lam_blocks, ones.reshape(B, 1, 1, n), slice(0, 0),
                               diag={"nu": -(lam * e) * r})
        a2 = np.concatenate([r_new, x, np.ones((B, 1), dtype=self.dtype)], axis=1)
        h = np.tanh(a2 @ self.C.T)
        readout = Layer("C", a2, np.stack([ones, zero], axis=1).reshape(B, 2, 1, n),
                        np.stack([zero, 1.0 - h * h], axis=1).reshape(B, 2, 1, n), slice(0, n))
        return np.concatenate([r_new, h], axis=1), [rec, readout]
