"""The OK and KF-RTRL papers' configurations and published figures.

Reference figures (:func:`kfrtrl.plotting.copy_band` draws the band beside a run):

- :data:`OK_COPY_T_CUR`: the copy task's T_cur at fixed step counts, the range
  over the five logged runs of the OK paper's copy configuration (RHN depth
  1, n = 128, OK rank 16, batch 16, Adam with learning rate 10^-3.5, float32).
- :data:`OK_PTB_BPC`: validation bits per character of the OK paper's
  character-level Penn Treebank run (RHN, n = 256, OK rank 8, batch 32, Adam
  10^-3.5); another corpus than the bundled one, so for shape only.

Source of both (:data:`SOURCE`): the training logs published with F. Benzing,
M. M. Gauy, A. Mujika, A. Martinsson and A. Steger, "Optimal Kronecker-Sum
Approximation of Real Time Recurrent Learning", ICML 2019.

The authors' code differs from the package's defaults in details that
:data:`FAITHFUL` collects: an RHN candidate 2σ(z) − 1, every weight (the
readout and its bias included) drawn from N(0, 0.01²) (:func:`init_normal`),
only the cell's gradient clipped (to norm 1), the curriculum's running loss
starting at 1 bit and T_cur compared only when a sequence ends.
"""
import numpy as np

from ._validation import as_generator, check_float

SOURCE = ("training logs published with Benzing, Gauy, Mujika, Martinsson and Steger, "
          "'Optimal Kronecker-Sum Approximation of Real Time Recurrent Learning', ICML 2019")

#: {steps: (lowest, highest) T_cur} over the authors' five copy-task runs
OK_COPY_T_CUR = {
    10_000: (4, 4),
    20_000: (7, 8),
    50_000: (11, 12),
    100_000: (15, 17),
    200_000: (19, 21),
    500_000: (25, 30),
    1_000_000: (32, 37),
    2_000_000: (38, 45),
}

#: {steps: validation bits per character} of the authors' Penn Treebank run
OK_PTB_BPC = {10_000: 2.97, 20_000: 2.70, 30_000: 2.52, 40_000: 2.39, 50_000: 2.31}

#: the OK copy configuration's settings (model, estimator, optimiser)
OK_COPY = {"cell": "rhn", "depth": 1, "hidden": 128, "estimator": "ok:16", "batch": 16, "lr": 10 ** -3.5,
           "dtype": "float32", "init_std": 0.01}

#: the authors' code details, as the package's options
FAITHFUL = {"candidate": "sigmoid", "clip": 1.0, "clip_scope": "cell", "curriculum_start": 1.0,
            "check": "sequence_end"}


def init_normal(params, std, rng=None):
    """Overwrite every array of ``params`` in place with draws from N(0, std²).

    Parameters
    ----------
    params : dict {name: ndarray}, e.g. ``{**cell.params(), "readout": trainer.readout.W}``;
        drawn in the dict's order, each in its own dtype (biases included)
    std : float >= 0
    rng : None, int or numpy.random.Generator

    The OK authors' initialisation with ``std = 0.01``. Cost: one draw per entry.
    """
    std = check_float("std", std, 0.0, np.inf)
    gen = as_generator(rng)
    for W in params.values():
        W[...] = std * gen.standard_normal(W.shape)


def band(steps):
    """The authors' (lowest, highest) copy T_cur at ``steps`` if they logged it there, else None.

    Parameters
    ----------
    steps : int

    Returns
    -------
    tuple of (int, int) or None
    """
    return OK_COPY_T_CUR.get(int(steps))


def within_or_above(curve):
    """{steps: (T_cur, lowest, highest, ok)} for each logged step count ``curve`` reaches.

    Parameters
    ----------
    curve : dict of int to int, {steps: T_cur} of a run

    Returns
    -------
    dict
        ``{steps: (T_cur, lowest, highest, ok)}``; ``ok`` is True when T_cur >= the authors' lowest.
    """
    out = {}
    for steps, (low, high) in OK_COPY_T_CUR.items():
        if steps in curve:
            out[steps] = (curve[steps], low, high, curve[steps] >= low)
    return out
