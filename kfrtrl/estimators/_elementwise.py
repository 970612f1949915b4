"""Exact RTRL on element-wise cells and stacks of them: one row of influence per unit.

For each part (the cell itself, or each layer of a :class:`kfrtrl.Stack`) and
each parameter of its recurrent layer, E (batch, Z, n, m) holds the nonzero
entries of the influence on the recurrent state r (see
:mod:`kfrtrl._reference.elementwise`): O(Z·n·m) per sample instead of the
dense O(N·p·m). The gradient back-propagates the loss signal through the
step's readouts (exact: they are not fed back) to ∂L/∂r_t of each part, top
to bottom, passing ∂L/∂x_t down to the layer below (spatial backpropagation
only: exact for one layer).
"""
import numpy as np


class ElementwiseInfluence:
    """The influence state of exact element-wise RTRL for ``cell`` (element-wise or a Stack).

    Parameters
    ----------
    cell : an element-wise cell or a :class:`kfrtrl.Stack`
    batch_size : int
    ops : a backend's kernel module (``ew_propagate``, ``ew_gradient``)
    """

    def __init__(self, cell, batch_size, ops):
        self.cell, self.ops = cell, ops
        B, dtype = batch_size, cell.dtype
        self.E = {}
        for prefix, part, _, _ in self.parts(None):
            Z = part.param_shapes()[part.recurrent_names()[0]][0] // part.n_hidden
            for name in part.recurrent_names():
                p, m = part.param_shapes()[name]
                self.E[prefix + name] = np.zeros((B, Z, p // Z, m), dtype=dtype)

    def parts(self, cache):
        """[(prefix, cell, state slice, cache)] bottom to top (one part for a single cell)."""
        if hasattr(self.cell, "parts"):
            return self.cell.parts(cache if cache is not None else [None] * len(self.cell.cells))
        return [("", self.cell, slice(0, self.cell.n_state), cache)]

    def reset(self, mask):
        for E in self.E.values():
            E[mask] = 0.0

    def propagate(self, cache, n_threads):
        """E <- lam E + dz ⊗ a for every recurrent parameter of every part."""
        for prefix, part, _, part_cache in self.parts(cache):
            lam, terms = part.recurrent_terms(part_cache)
            for name, (dz, a) in terms.items():
                self.ops.ew_propagate(self.E[prefix + name], lam, dz, a, n_threads)

    def gradient(self, cache, c, n_threads):
        """{name: ∂L_t/∂θ} for the state cotangent c (batch, n_state), parts top to bottom."""
        grads, x_cot = {}, None
        parts = self.parts(cache)
        for idx in reversed(range(len(parts))):
            prefix, part, sl, part_cache = parts[idx]
            c_part = c[:, sl].copy()
            if x_cot is not None:
                c_part[:, part.out] += x_cot
            c_r, proj = part.readout_backward(part_cache, c_part)
            c_r = np.ascontiguousarray(c_r)
            for name, (g, a) in proj.items():
                grads[prefix + name] = g.T @ a
            for name in part.recurrent_names():
                E = self.E[prefix + name]
                out = np.empty(E.shape[1:], dtype=E.dtype)
                self.ops.ew_gradient(E, c_r, out, n_threads)
                grads[prefix + name] = out.reshape(-1, E.shape[3])
            if idx:                                     # the layer below waits for ∂L/∂x_t
                rec = part_cache[0]
                proj[rec.name] = (part.recurrent_cotangent(part_cache, c_r), rec.a)
                x_cot = part.input_cotangent(proj)
        return grads
