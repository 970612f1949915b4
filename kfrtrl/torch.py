"""A bridge to PyTorch: any kfrtrl estimator as an ``nn.Module`` trained by ``torch.optim``.

:class:`OnlineRNN` wraps a cell and an estimator. Its parameters are torch
tensors that share memory with the cell's arrays (``torch.from_numpy``: no
copy, an optimizer step writes straight into the cell), ``forward(x_t)``
advances the estimator one step and returns h_t, and the backward pass of
any torch loss on h_t sets each parameter's ``.grad`` to the estimator's
gradient for that step: ``estimator.gradient(∂L/∂h_t)``. So the loop is the
usual one::

    h = rnn(x)                  # step t
    loss = loss_fn(head(h), y)  # any torch computation on h_t
    opt.zero_grad(); loss.backward(); opt.step()

Online learning has one rule PyTorch does not: the backward pass of step t
must run before step t + 1 (the estimator keeps the influence of the current
step only); a late backward raises RuntimeError. The inputs are data: no
gradient flows into x (an x that requires grad raises ValueError).
Needs the ``torch`` extra (``pip install "kfrtrl[torch]"``).
"""
import numpy as np
import torch
from torch import nn

from . import checkpoint, train
from ._validation import check_mask
from .cells import Cell

__all__ = ["OnlineRNN"]


class _Step(torch.autograd.Function):
    """h_t = rnn.estimator.step(x); backward: the parameters' grads from estimator.gradient(∂L/∂h_t)."""

    @staticmethod
    def forward(ctx, x, rnn, *params):
        h = rnn.estimator.step(x.detach().numpy())
        rnn.steps += 1
        ctx.rnn, ctx.step = rnn, rnn.steps
        return torch.from_numpy(h.copy())

    @staticmethod
    def backward(ctx, dl_dh):
        rnn = ctx.rnn
        if ctx.step != rnn.steps:
            raise RuntimeError(f"OnlineRNN: backward of step {ctx.step} after step {rnn.steps} ran; online "
                               "learning needs each step's backward before the next forward")
        c = np.ascontiguousarray(dl_dh.detach().numpy(), dtype=rnn.estimator.dtype)
        grads = rnn.estimator.gradient(c)
        return (None, None, *(torch.from_numpy(grads[name]) for name in rnn.param_names))


class OnlineRNN(nn.Module):
    """A kfrtrl cell and estimator as a PyTorch module, one time step per call.

    Parameters
    ----------
    cell : kfrtrl.cells.Cell
        The recurrent cell (e.g. ``kfrtrl.Elman(n_in, n_hidden, dtype=np.float32)``); its dtype
        (float32 or float64) is the module's. Its weight arrays become the module's parameters
        under the same names (``"W"``, ``"Wc"``, ...), sharing memory with them.
    estimator : str
        An estimator spec as in :func:`kfrtrl.train.make_estimator`: a registered name
        (:func:`kfrtrl.estimators.names`), or ``name:k`` for one taking a parameter.
    batch_size : int >= 1
        Samples per step, each with its own state and influence.
    rng : None, int or numpy.random.Generator
        Source of the estimator's random signs (the same seed gives the same draws as the
        numpy estimator).
    backend : str
        Kernel backend: ``"auto"``, ``"numpy"``, ``"numba"`` or ``"cython"``.

    Attributes
    ----------
    estimator : kfrtrl estimator
        The wrapped estimator (``rnn.estimator.state`` is the cell state).
    param_names : tuple of str
        The parameter names, in the order of ``cell.params()``.
    steps : int
        Steps taken since construction.

    Notes
    -----
    Cost per step: the estimator's (see its class, e.g. ``help(kfrtrl.OK)``) plus two small
    copies (h_t out, ∂L/∂h_t in). The parameters must stay the cell's arrays: converting the
    module (``.double()``, ``.to("cuda")``) breaks the sharing and the next step raises
    RuntimeError; build the cell in the dtype you want instead. ``state_dict()`` holds the
    weights and, as extra state, the estimator's state and random generator, so that
    ``load_state_dict`` resumes bit for bit (torch.load's ``weights_only=True`` reads it).

    Examples
    --------
    >>> import numpy as np, torch, kfrtrl
    >>> from kfrtrl.torch import OnlineRNN
    >>> rnn = OnlineRNN(kfrtrl.Elman(3, 8, rng=0), "ok:2", batch_size=4, rng=1)
    >>> head = torch.nn.Linear(8, 2, dtype=torch.float64)
    >>> opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    >>> h = rnn(torch.randn(4, 3, dtype=torch.float64))
    >>> loss = head(h).pow(2).sum()
    >>> opt.zero_grad(); loss.backward(); opt.step()
    >>> rnn.W.grad.shape
    torch.Size([8, 12])
    """

    def __init__(self, cell, estimator="ok:2", batch_size=1, rng=None, backend="auto"):
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected a kfrtrl cell (e.g. kfrtrl.Elman), got {type(cell).__name__}")
        self.estimator = train.make_estimator(estimator, cell, batch_size, rng, backend)
        self.cell = cell
        self.steps = 0
        self.param_names = tuple(cell.params())
        for name, array in cell.params().items():
            self.register_parameter(name, nn.Parameter(torch.from_numpy(array)))

    def forward(self, x):
        """One step of every sample.

        Parameters
        ----------
        x : torch.Tensor, (batch_size, n_in), of the cell's dtype, not requiring grad

        Returns
        -------
        torch.Tensor, (batch_size, n_hidden): h_t, connected to the parameters for backward.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.requires_grad:
            raise ValueError("x: expected a tensor that does not require grad (no gradient flows into the "
                             "inputs; pass x.detach()), got one that requires grad")
        self._check_shared()
        return _Step.apply(x, self, *(getattr(self, name) for name in self.param_names))

    def reset(self, mask=None):
        """Zero the state and influence of all samples, or of those where ``mask`` is True.

        Parameters
        ----------
        mask : None, or (batch_size,) bool numpy array or torch.Tensor
        """
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        self.estimator.reset(check_mask("mask", mask, self.estimator.batch_size))

    def _check_shared(self):
        for name, array in self.cell.params().items():
            p = getattr(self, name)
            if p.data_ptr() != array.ctypes.data or p.element_size() != array.itemsize:
                raise RuntimeError(f"OnlineRNN: parameter {name!r} no longer shares memory with the cell's "
                                   "array (was the module converted with .to()/.double()?); build the cell "
                                   "in the dtype wanted instead")

    def get_extra_state(self):
        """The estimator's run state and RNG in kfrtrl's checkpoint format, as a uint8 tensor (see ``state_dict``)."""
        payload = {"estimator": self.estimator.state_dict(), "steps": self.steps}
        return torch.frombuffer(bytearray(checkpoint.dumps(payload)), dtype=torch.uint8)

    def set_extra_state(self, state):
        """Restore what :meth:`get_extra_state` saved (read by :mod:`kfrtrl.checkpoint`: nothing is unpickled).

        Parameters
        ----------
        state : torch.Tensor
            The uint8 tensor of :meth:`get_extra_state`.
        """
        payload, _ = checkpoint.loads(state.numpy().tobytes(), "OnlineRNN extra state")
        self.estimator.load_state_dict(payload["estimator"])
        self.steps = int(payload["steps"])

    def extra_repr(self):
        est = self.estimator
        return (f"{type(self.cell).__name__}(n_in={self.cell.n_in}, n_hidden={self.cell.n_hidden}), "
                f"{type(est).__name__}, batch_size={est.batch_size}, backend={est.backend!r}, "
                f"dtype={np.dtype(est.dtype).name}")
