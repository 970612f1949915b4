"""The trainer's linear readout and its losses.

:class:`Readout` maps the cell's state to logits, ``logits = W [h; 1]``;
:func:`softmax_xent` (classes) and :func:`squared_error` (real targets) give
each sample's loss and its gradient with respect to the logits, which
:meth:`Readout.backward` turns into the readout's gradient and ∂L/∂h for the
estimator. All exact and O(B·n_out·n) per step.
"""
import numpy as np

from ._validation import as_generator, check_int

#: nats per bit
LN2 = float(np.log(2.0))


def softmax_xent(logits, y):
    """Softmax cross-entropy of each sample and its gradient; cost O(B·C).

    Parameters
    ----------
    logits : (B, C) float32 or float64 array
    y : (B,) int array
        Classes in [0, C).

    Returns
    -------
    loss : (B,) array of the logits' dtype
        −log softmax(logits)[y], in nats.
    grad : (B, C) array of the logits' dtype
        ∂loss/∂logits = softmax(logits) − onehot(y).
    """
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    grad = np.exp(logp)
    grad[rows, y] -= 1.0
    return -logp[rows, y], grad


def squared_error(out, y):
    """½|y − out|² of each sample and its gradient; cost O(B·C).

    Parameters
    ----------
    out, y : (B, C) float32 or float64 arrays
        Prediction and target.

    Returns
    -------
    loss : (B,) float array
    grad : (B, C) float array
        ∂loss/∂out = out − y.
    """
    diff = out - y
    return 0.5 * np.sum(diff * diff, axis=1), diff


class Readout:
    """Linear readout ``logits = W [h; 1]`` with ``W`` (n_out, n_hidden + 1) of the cell's dtype.

    Parameters
    ----------
    n_hidden : int >= 1
        Size of the state h.
    n_out : int >= 1
        Size of the logits.
    dtype : numpy float dtype
        Of ``W`` (float32 or float64, the cell's).
    rng : None, int or numpy.random.Generator
        Draws the weights from N(0, 1/n_hidden); the bias column starts at 0.

    Notes
    -----
    Cost O(B·n_out·n_hidden) per call and per :meth:`backward`.
    """

    def __init__(self, n_hidden, n_out, dtype=np.float64, rng=None):
        n_hidden = check_int("n_hidden", n_hidden, 1)
        n_out = check_int("n_out", n_out, 1)
        self.W = np.zeros((n_out, n_hidden + 1), dtype=dtype)
        self.W[:, :n_hidden] = as_generator(rng).standard_normal((n_out, n_hidden)) / np.sqrt(n_hidden)

    def __call__(self, h):
        """h (B, n_hidden) -> logits (B, n_out)."""
        return h @ self.W[:, :-1].T + self.W[:, -1]

    def loss_bits(self, h, y):
        """Cross-entropy in bits of the readout of ``h`` against the classes ``y``.

        Parameters
        ----------
        h : (B, n_hidden) array of W's dtype
        y : (B,) int array, classes in [0, n_out)

        Returns
        -------
        (B,) array of W's dtype
        """
        return softmax_xent(self(h), y)[0] / LN2

    def backward(self, h, dlogits):
        """Gradients of a loss L through the readout.

        Parameters
        ----------
        h : (B, n_hidden) array of W's dtype
        dlogits : (B, n_out) array of W's dtype
            ∂L/∂logits.

        Returns
        -------
        gW : (n_out, n_hidden + 1) array
            ∂L/∂W summed over the batch.
        dl_dh : (B, n_hidden) array
            ∂L/∂h.
        """
        gW = np.concatenate([dlogits.T @ h, dlogits.sum(axis=0)[:, None]], axis=1)
        return gW, dlogits @ self.W[:, :-1]
