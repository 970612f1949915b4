"""Online training around any cell + estimator, with checkpoint and resume.

One step of :class:`Trainer` (per sample b of the batch)::

    reset the state/influence of samples starting a new sequence
    h_t = estimator.step(x_t)                  cell state and influence forward
    logits = W_out [h_t; 1]                    linear readout (exact gradient)
    L_t = softmax cross-entropy (or ½|y - logits|²)
    ∂L/∂W_out exact;  ∂L/∂θ_cell = estimator.gradient(∂L_t/∂h_t)

Gradients are means over the batch; with ``update_every = k`` the mean of
k steps' gradients is clipped to global norm ``clip`` (all parameters
together, or with ``clip_scope="cell"`` the cell's alone, the readout's left
unclipped as in the OK authors' code, which clips to 1) and applied by Adam or SGD.

:func:`make_estimator` builds an estimator from a spec string such as
``"name:k"`` (read from the registry, :mod:`kfrtrl.estimators._registry`);
:func:`run` drives a trainer on a task (:mod:`kfrtrl.tasks`);
:func:`save_checkpoint` / :func:`load_checkpoint` store and restore cell,
readout, optimizer, estimator (factors, RNG state) and task so that a
stopped run continues bit-identically (format: :mod:`kfrtrl.checkpoint`).
"""
import copy

import numpy as np

from . import checkpoint
from ._validation import as_generator, check_array, check_choice, check_float, check_int
from .cells import Cell
from .estimators import make_estimator, parse_spec  # noqa: F401  (part of kfrtrl.train's API)
from .optim import SGD, Adam, KalmanFilter, Schedule, as_schedule, clip_global_norm
from .readout import LN2, Readout, softmax_xent, squared_error

__all__ = ["LN2", "OPTIMIZER_NAMES", "SGD", "Adam", "Readout", "Trainer", "clip_global_norm", "describe",
           "load_checkpoint", "make_estimator", "parse_spec", "run", "save_checkpoint", "softmax_xent",
           "squared_error"]

_OPTIMIZERS = {"adam": Adam, "sgd": SGD, "kalman": KalmanFilter}
OPTIMIZER_NAMES = tuple(_OPTIMIZERS)


def _make_optimizer(optimizer, lr, rng):
    """An optimizer from its name (a KalmanFilter's rng is spawned from ``rng``) or a KalmanFilter instance."""
    if isinstance(optimizer, KalmanFilter):
        return optimizer
    name = check_choice("optimizer", optimizer, _OPTIMIZERS)
    if name == "kalman":
        return KalmanFilter(rng=as_generator(rng).spawn(1)[0] if rng is not None else None)
    return _OPTIMIZERS[name](lr)


class Trainer:
    """Online training of ``estimator.cell`` plus a linear readout.

    Parameters
    ----------
    estimator : kfrtrl estimator
        E.g. ``kfrtrl.OK(cell, ...)``; its cell (float32 or float64) is trained.
    n_out : int >= 1
        Readout size (classes for "xent").
    loss : {"xent", "mse"}
        Softmax cross-entropy with integer targets (B,), or ½|y − logits|² with float targets (B, n_out).
    optimizer : {"adam", "sgd", "kalman"} or kfrtrl.optim.KalmanFilter
        "kalman" is :class:`kfrtrl.optim.KalmanFilter` with its defaults.
    lr : float > 0 or kfrtrl.optim.Schedule
        Constant rate, or the rate of the t-th update (e.g. ``Schedule(0.01, tau=1000, rho=0.75)``).
    clip : float > 0 or None
        Global gradient-norm clip.
    update_every : int >= 1
        Apply the mean gradient every this many steps.
    rng : None, int or numpy.random.Generator
        For the readout's initialisation (and a "kalman" optimizer's sampling).
    clip_scope : {"all", "cell"}
        Clip every parameter's gradient together, or the cell's only.

    Notes
    -----
    Cost per step: the estimator's step and gradient plus O(B·n_out·n) for the readout, and
    O(parameters) per update. Metrics (running averages since the last ``metrics(reset=True)``):
    ``loss`` (bits for "xent"), ``bpc`` and ``accuracy`` for "xent".
    """

    def __init__(self, estimator, n_out, loss="xent", optimizer="adam", lr=1e-3, clip=1.0, update_every=1,
                 rng=None, clip_scope="all"):
        if not isinstance(getattr(estimator, "cell", None), Cell):
            raise TypeError(f"estimator: expected a kfrtrl estimator, got {type(estimator).__name__}")
        self.estimator = estimator
        self.cell = estimator.cell
        self.loss = check_choice("loss", loss, ("xent", "mse"))
        self.schedule = as_schedule(lr)
        self.optimizer = _make_optimizer(optimizer, self.schedule.lr, rng)
        self.clip = None if clip is None else check_float("clip", clip, 0.0, np.inf, open_low=True)
        self.clip_scope = check_choice("clip_scope", clip_scope, ("all", "cell"))
        self.update_every = check_int("update_every", update_every, 1)
        self.readout = Readout(self.cell.n_hidden, n_out, self.cell.dtype, rng)
        self.n_out = n_out
        self.steps = 0
        self.output = None             # the readout's output (B, n_out) of the last step
        self._accum = {k: np.zeros_like(v) for k, v in self._params().items()}
        self._sums = {"loss": 0.0, "correct": 0.0, "count": 0}

    def _params(self):
        params = {f"cell.{k}": v for k, v in self.cell.params().items()}
        params["readout.W"] = self.readout.W
        return params

    def step(self, x, y, reset=None):
        """One online step: reset, forward, loss, gradient, maybe update.

        The whole step runs in the estimator's thread context (``Estimator.threads``).

        Parameters
        ----------
        x : (B, n_in) array of the cell's dtype
        y : (B,) int array of classes ("xent") or (B, n_out) float array ("mse")
        reset : (B,) bool array or None
            Samples whose state is zeroed before the step.

        Returns
        -------
        (B,) float64 array
            The per-sample loss (bits for "xent").
        """
        with self.estimator.threads():
            return self._step(x, y, reset)

    def _step(self, x, y, reset):
        B = self.estimator.batch_size
        if reset is not None and np.any(reset):
            self.estimator.reset(reset)
        readout = {}

        def loss_grad(h):                       # the readout's part, known before the influence moves
            readout["loss"] = self._loss(h, y)
            readout["dlogits"] = readout["loss"][1] / B
            readout["backward"] = self.readout.backward(h, readout["dlogits"].astype(self.cell.dtype))
            return readout["backward"][1].astype(self.cell.dtype)

        h = self.estimator.step(x, loss_grad=loss_grad)
        loss, _, correct = readout["loss"]
        if getattr(self.optimizer, "needs_fisher", False):
            factors = self.optimizer.fisher_factors(self.loss, self.output)
            self.optimizer.observe([self._gradients(h, d) for d in factors])
        grads = self._gradients(h, readout["dlogits"], readout["backward"])
        for k, g in grads.items():
            self._accum[k] += g
        self.steps += 1
        if self.steps % self.update_every == 0:
            self._apply()
        self._sums["loss"] += float(np.sum(loss))
        self._sums["correct"] += float(np.sum(correct))
        self._sums["count"] += B
        return loss

    def _gradients(self, h, dlogits, backward=None):
        """{"cell.<name>", "readout.W"} gradients for ∂L/∂logits = dlogits (B, n_out); ``backward``:
        the readout's (gW, dl_dh) for them, when the step's loss_grad has it already."""
        gW, dl_dh = backward if backward is not None else self.readout.backward(h, dlogits.astype(self.cell.dtype))
        grads = {f"cell.{k}": g for k, g in self.estimator.gradient(dl_dh.astype(self.cell.dtype)).items()}
        grads["readout.W"] = gW
        return grads

    def _loss(self, h, y):
        logits = self.readout(h)
        self.output = logits
        if self.loss == "mse":
            y = check_array("y", y, logits.shape, self.cell.dtype)
            loss, dlogits = squared_error(logits, y)
            return loss.astype(np.float64), dlogits, np.zeros(len(y))
        y = np.asarray(y)
        if y.shape != (len(h),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.n_out:
            raise ValueError(
                f"y: expected integer classes in [0, {self.n_out}) of shape ({len(h)},), "
                f"got dtype {y.dtype} and shape {y.shape}"
            )
        loss, dlogits = softmax_xent(logits, y)
        return loss.astype(np.float64) / LN2, dlogits, logits.argmax(axis=1) == y

    def _apply(self):
        grads = {k: g / self.update_every for k, g in self._accum.items()}
        clip_global_norm({k: g for k, g in grads.items() if self.clip_scope == "all" or k.startswith("cell.")},
                         self.clip)
        self.optimizer.update(self._params(), grads, self.schedule(self.steps // self.update_every - 1))
        for g in self._accum.values():
            g[...] = 0.0

    def metrics(self, reset=False):
        """Running averages over the samples since the last reset.

        Parameters
        ----------
        reset : bool
            Start new averages after reading these.

        Returns
        -------
        dict
            ``{"loss", "bpc", "accuracy"}`` for "xent", ``{"loss"}`` for "mse".
        """
        n = max(self._sums["count"], 1)
        out = {"loss": self._sums["loss"] / n}
        if self.loss == "xent":
            out["bpc"] = out["loss"]
            out["accuracy"] = self._sums["correct"] / n
        if reset:
            self._sums = {"loss": 0.0, "correct": 0.0, "count": 0}
        return out

    def state_dict(self):
        """Everything a bit-identical resume needs (a dict of arrays, numbers and dicts)."""
        return {
            "cell": _cell_state(self.cell),
            "estimator": self.estimator.state_dict(),
            "readout": self.readout.W.copy(),
            "optimizer": (type(self.optimizer).__name__, self.optimizer.state_dict()),
            "accum": copy.deepcopy(self._accum),
            "steps": self.steps,
            "sums": dict(self._sums),
            "config": self._config(),
            "schedule": self.schedule.config(),
        }

    def _config(self):
        """What must agree between a checkpoint and the trainer resuming it (the schedule is restored)."""
        return {"loss": self.loss, "update_every": self.update_every, "n_out": self.n_out}

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict`; the trainer must have the same configuration.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`; ValueError names what differs.
        """
        _require_equal("trainer", state["config"], self._config())
        self.schedule = Schedule(**state["schedule"])
        _require_equal("optimizer", state["optimizer"][0], type(self.optimizer).__name__)
        _load_cell_state(self.cell, state["cell"])
        self.estimator.load_state_dict(state["estimator"])
        self.readout.W[...] = state["readout"]
        self.optimizer.load_state_dict(state["optimizer"][1])
        self._accum = copy.deepcopy(state["accum"])
        self.steps = int(state["steps"])
        self._sums = dict(state["sums"])


def _require_equal(what, saved, current):
    if saved != current:
        raise ValueError(f"checkpoint: expected {what} {current!r} (this run), got {saved!r} in the checkpoint")


def _cell_state(cell):
    plain = {k: v for k, v in vars(cell).items() if isinstance(v, (int, float, str))}
    return {"class": type(cell).__name__, "config": plain,
            "params": {k: v.copy() for k, v in cell.params().items()}}


def _load_cell_state(cell, state):
    _require_equal("cell class", state["class"], type(cell).__name__)
    _require_equal("cell configuration", state["config"],
                   {k: v for k, v in vars(cell).items() if isinstance(v, (int, float, str))})
    for k, p in cell.params().items():
        _require_equal(f"shape of parameter {k!r}", state["params"][k].shape, p.shape)
        p[...] = state["params"][k]


def describe(trainer):
    """The trainer's hyperparameters: what a checkpoint records and a resume must repeat.

    The estimator's and the cell's configuration are checked by their own
    ``load_state_dict``, and the learning-rate schedule is restored from the checkpoint.
    Options added to :class:`Trainer` belong here too.

    Parameters
    ----------
    trainer : Trainer

    Returns
    -------
    dict of JSON values
    """
    optimizer = trainer.optimizer
    described = {"optimizer": type(optimizer).__name__.lower(), "loss": trainer.loss, "clip": trainer.clip,
                 "clip_scope": trainer.clip_scope, "update_every": trainer.update_every, "n_out": trainer.n_out}
    if isinstance(optimizer, Adam):
        described.update(beta1=optimizer.beta1, beta2=optimizer.beta2, eps=optimizer.eps)
    return described


def save_checkpoint(path, trainer, task=None, config=None):
    """Write trainer (and task) state to ``path`` atomically, in :mod:`kfrtrl.checkpoint`'s format.

    Parameters
    ----------
    path : str or os.PathLike
    trainer : Trainer
    task : task or None
        A task of :mod:`kfrtrl.tasks` (or :class:`kfrtrl.series.Series`) whose position is saved too.
    config : dict of JSON values or None
        The run's configuration (e.g. every command-line option), stored with :func:`describe`'s
        so that a resume can be checked against it.
    """
    state = {"trainer": trainer.state_dict(),
             "task": None if task is None else (type(task).__name__, task.state_dict())}
    checkpoint.save(path, state, {"trainer": describe(trainer), "run": {} if config is None else config})


def load_checkpoint(path, trainer, task=None, config=None):
    """Restore ``trainer`` (and ``task``) from :func:`save_checkpoint`'s file at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    trainer : Trainer
        Built like the saved one.
    task : task or None
        Exactly when the checkpoint holds one, of the same class.
    config : dict of JSON values or None
        When given, must equal the checkpoint's.

    Returns
    -------
    dict
        The checkpoint's ``config``.

    Raises
    ------
    ValueError
        Naming every difference of the hyperparameters (:func:`describe`) or ``config``, a
        mismatched estimator, cell or task, or a file that is not a checkpoint, truncated or corrupt.
    """
    state, saved = checkpoint.load(path)
    differences = _differences(saved.get("trainer", {}), describe(trainer))
    if config is not None:
        differences += _differences(saved.get("run", {}), config)
    if differences:
        raise ValueError(f"checkpoint {str(path)!r}: this run differs from it in " + "; ".join(differences))
    if (task is None) != (state["task"] is None):
        raise ValueError("task: expected a task exactly when the checkpoint holds one")
    trainer.load_state_dict(state["trainer"])
    if task is not None:
        _require_equal("task class", state["task"][0], type(task).__name__)
        task.load_state_dict(state["task"][1])
    return saved.get("run", {})


def _differences(saved, current):
    """["key: <current> here, <saved> in the checkpoint", ...] for every key whose values differ."""
    return [f"{k}: {current.get(k)!r} here, {saved.get(k)!r} in the checkpoint"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def run(trainer, task, steps, callback=None):
    """Train online for ``steps`` steps of ``task``.

    Parameters
    ----------
    trainer : Trainer
    task : task
        With ``next() -> (x, y, reset)`` and ``observe(loss, output)`` (:mod:`kfrtrl.tasks`).
    steps : int >= 0
    callback : callable or None
        ``callback(step)`` after every step (1-based).

    Returns
    -------
    dict
        The trainer's metrics (running averages since its last ``metrics(reset=True)``).
    """
    steps = check_int("steps", steps, 0)
    for i in range(steps):
        x, y, reset = task.next()
        loss = trainer.step(x, y, reset)
        task.observe(loss, trainer.output)
        if callback is not None:
            callback(i + 1)
    return trainer.metrics()
