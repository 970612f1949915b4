"""A stack of element-wise recurrent layers, each reading the output of the one below.

:class:`Stack` is itself a cell: its state is the layers' states side by side,
its output the top layer's. ``bptt`` and ``TBPTT`` back-propagate through
the whole stack exactly; :class:`kfrtrl.RTRL` runs exact element-wise RTRL
inside each layer and passes the loss signal between layers by the step's
own (spatial) backpropagation only, as Irie, Gopalakrishnan & Schmidhuber
and Zucchet et al. do: the gradient of a lower layer then misses the paths
through the upper layers' recurrences (exact for one layer, approximate for
more; see the README for the measured deviation).
"""
import numpy as np

from ._base import Cell
from .elementwise import ElementwiseCell


class Stack(Cell):
    """Layers ``cells[0]`` (reads x_t) to ``cells[-1]`` (gives h_t), each an element-wise cell.

    Parameters
    ----------
    cells : sequence of element-wise cells (:class:`kfrtrl.ELSTM`, :class:`kfrtrl.LRU`),
        ``cells[i].n_in == cells[i-1].n_hidden``, one dtype. The cells are used live
        (training the stack trains them).

    Parameter names: ``"{i}.{name}"`` for parameter ``name`` of ``cells[i]``.
    Only :class:`kfrtrl.RTRL` (per-layer exact, spatial between layers),
    :class:`kfrtrl.TBPTT` and :func:`kfrtrl.bptt` support a stack.

    Notes
    -----
    Cost per step and sample: the sum of the layers' costs; exact element-wise RTRL on a stack
    carries each layer's influence and passes the gradient between layers spatially (within
    the step), as in the Zucchet et al. paper.

    References
    ----------
    N. Zucchet, R. Meier, S. Schug, A. Mujika and J. Sacramento, "Online learning of long-range
    dependencies", NeurIPS 2023 (arXiv:2305.15947).

    Examples
    --------
    >>> import kfrtrl
    >>> stack = kfrtrl.Stack([kfrtrl.LRU(3, 8, rng=0), kfrtrl.LRU(8, 4, rng=1)])
    >>> sorted(stack.params())
    ['0.B', '0.C', '0.nu', '1.B', '1.C', '1.nu']
    """

    elementwise = True

    def __init__(self, cells):
        cells = list(cells) if isinstance(cells, (list, tuple)) else cells
        if not isinstance(cells, list) or not cells:
            raise TypeError(f"cells: expected a non-empty list of element-wise cells, got {cells!r}")
        for i, cell in enumerate(cells):
            if not isinstance(cell, ElementwiseCell):
                raise TypeError(f"cells[{i}]: expected an element-wise cell (kfrtrl.ELSTM or kfrtrl.LRU), "
                                f"got {type(cell).__name__}")
            if i and cell.n_in != cells[i - 1].n_hidden:
                raise ValueError(f"cells[{i}]: expected n_in = {cells[i - 1].n_hidden} (n_hidden of "
                                 f"cells[{i - 1}]), got {cell.n_in}")
            if cell.dtype != cells[0].dtype:
                raise TypeError(f"cells[{i}]: expected dtype {cells[0].dtype} (that of cells[0]), got {cell.dtype}")
        self.cells = cells
        self.n_in, self.n_hidden, self.dtype = cells[0].n_in, cells[-1].n_hidden, cells[0].dtype
        starts = np.cumsum([0] + [cell.n_state for cell in cells])
        self._slices = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        self.n_state = int(starts[-1])
        top = cells[-1].out
        self.out = slice(self._slices[-1].start + top.start, self._slices[-1].start + top.stop)
        self._params = {f"{i}.{k}": v for i, cell in enumerate(cells) for k, v in cell.params().items()}

    def parts(self, cache):
        """The layers of a step, bottom to top.

        Parameters
        ----------
        cache : list, from :meth:`forward`

        Returns
        -------
        list of (str, Cell, slice, cache)
            The parameter-name prefix, the cell, its slice of the state and its cache.
        """
        return [(f"{i}.", cell, sl, c) for i, (cell, sl, c) in enumerate(zip(self.cells, self._slices, cache))]

    def forward(self, s, x):
        """One step of every layer, each reading the output of the one below.

        Parameters
        ----------
        s : (batch, n_state) array of ``dtype``
        x : (batch, n_in) array of ``dtype``

        Returns
        -------
        s_new : (batch, n_state) array
        cache : list, each cell's cache
        """
        s_new = np.empty_like(s)
        caches = []
        for cell, sl in zip(self.cells, self._slices):
            s_new[:, sl], cache = cell.forward(s[:, sl], x)
            caches.append(cache)
            x = s_new[:, sl][:, cell.out]
        return s_new, caches

    def backward(self, cache, c, state=True):
        """One exact reverse sweep through the whole step (see :meth:`Cell.backward`), top to bottom.

        Parameters
        ----------
        cache : list, from :meth:`forward`
        c : (batch, n_state) array of ``dtype``
        state : bool, as for :meth:`Cell.backward`

        Returns
        -------
        H_tᵀ c : (batch, n_state) array or None
        projections : dict of str to (g, a), names prefixed by the layer ("0.W", ...)
        """
        c_prev = np.zeros_like(c) if state else None
        proj, x_cot = {}, None
        for prefix, cell, sl, part in reversed(self.parts(cache)):
            c_l = c[:, sl].copy()
            if x_cot is not None:
                c_l[:, cell.out] += x_cot
            prev, p = cell.backward(part, c_l, state)
            if state:
                c_prev[:, sl] = prev
            x_cot = cell.input_cotangent(p)
            proj.update({prefix + k: v for k, v in p.items()})
        return c_prev, proj

    def diagonal_step(self, cache):
        """None: a stack's step is never one diagonal layer.

        Parameters
        ----------
        cache : list, from :meth:`forward`
        """
        return None

    def jvp(self, cache, V, ops, n_threads=1, out=None):
        """Not available: TypeError (a stack supports RTRL, TBPTT and bptt; arguments as :meth:`Cell.jvp`).

        Parameters
        ----------
        cache, V, ops, n_threads, out : as for :meth:`Cell.jvp`
        """
        raise TypeError("cell: a Stack supports only RTRL, TBPTT and bptt (it has no tangent propagation)")

    def immediate(self, cache, ops, n_threads=1, out=None):
        """Not available: TypeError (a stack supports RTRL, TBPTT and bptt).

        Parameters
        ----------
        cache, ops, n_threads, out : as for :meth:`Cell.immediate`
        """
        raise TypeError("cell: a Stack supports only RTRL, TBPTT and bptt (it has no immediate term)")


def gradient_deviation(stack, xs, dl_dhs, backend="auto"):
    """How far exact-per-layer RTRL on ``stack`` is from BPTT on one sequence.

    Runs :class:`kfrtrl.RTRL` online over ``xs`` (T, batch, n_in) with the loss
    signals ``dl_dhs`` (T, batch, n_hidden), parameters fixed, sums its per-step
    gradients and compares the sum with :func:`kfrtrl.bptt` of the same sequence.

    Cost: T steps of each.

    Parameters
    ----------
    stack : Stack
    xs : (T, batch, n_in) array of the stack's dtype
    dl_dhs : (T, batch, n_hidden) array, the loss signals ∂L_t/∂h_t
    backend : str, RTRL's kernel backend

    Returns
    -------
    dict
        ``{"all": (cosine, relative error), "0": ..., "1": ...}``: over the whole parameter
        vector and per layer, ``cosine = <g, g_bptt> / (|g| |g_bptt|)`` and
        ``relative error = |g - g_bptt| / |g_bptt|``.
    """
    from ..estimators import RTRL, bptt

    est = RTRL(stack, batch_size=xs.shape[1], backend=backend)
    total = {k: np.zeros(s, dtype=stack.dtype) for k, s in stack.param_shapes().items()}
    for x, dl in zip(xs, dl_dhs):
        est.step(x)
        for k, g in est.gradient(dl).items():
            total[k] += g
    exact = bptt(stack, xs, dl_dhs)
    groups = {"all": list(total)}
    for i in range(len(stack.cells)):
        groups[str(i)] = [k for k in total if k.startswith(f"{i}.")]
    result = {}
    for label, names in groups.items():
        g = np.concatenate([total[k].ravel() for k in names]).astype(np.float64)
        e = np.concatenate([exact[k].ravel() for k in names]).astype(np.float64)
        result[label] = (float(g @ e / (np.linalg.norm(g) * np.linalg.norm(e))),
                         float(np.linalg.norm(g - e) / np.linalg.norm(e)))
    return result
