"""Long real-valued time series as an online regression task.

:class:`Series` streams the rows of a (T, C) array (or (B, T, C): B series)
to the trainer: at step t the input is row t's input columns, the target the
target columns ``horizon`` rows ahead (squared error). Both are normalised
per feature by running means and variances of the rows seen so far (the
current row included, nothing ahead of it). The task keeps prequential
(predict first, then learn) metrics in the data's own units: the model's
MSE, and the MSE of the naive last-value predictor and of the best
constant predictor (the targets' variance) over the same steps.

:func:`load_table` reads a CSV (header optional) or NPY file; bad values
raise ValueError naming the row and the column.
"""
import copy
import csv
import numbers
import os

import numpy as np

from ._validation import check_dtype, check_float, check_int


def _column_name(names, j):
    return f"{names[j]!r}" if names is not None else str(j)


def check_table(data, names=None, what="data"):
    """Require a finite numeric (T, C) or (B, T, C) array; ValueError naming the first bad row and column.

    Parameters
    ----------
    data : array-like of numbers, (T, C) with T >= 2 or (B, T, C)
    names : list of str or None, the column names (for the message)
    what : str, what the data is called in the message

    Returns
    -------
    float64 array of the same shape
    """
    arr = np.asarray(data)
    if arr.ndim not in (2, 3) or arr.shape[-2] < 2 or arr.shape[-1] < 1:
        raise ValueError(f"{what}: expected a (rows >= 2, columns >= 1) table or a (B, rows, columns) stack, "
                         f"got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        *b, i, j = bad[0]
        where = f"series {b[0]}, " if b else ""
        raise ValueError(f"{what}: {where}row {i}, column {_column_name(names, j)}: expected a finite number, "
                         f"got {arr[tuple(bad[0])]}")
    return arr


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def load_table(path):
    """Read a table of numbers from a ``.npy`` or CSV file.

    CSV: comma-separated, the first line is a header if any of its fields is
    not a number. ValueError names the row (data rows counted from 0) and the
    column of a missing, non-numeric or non-finite value.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    data : (T, C) float64 array
    names : list of str or None
        The header's column names (None for an NPY file or a CSV without header).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: expected an existing CSV or NPY file, got {path!r} (not found)")
    if path.endswith(".npy"):
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"path: expected a numeric .npy array, got {path!r} ({exc})") from None
        return check_table(data, what=f"{path!r}"), None
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        raise ValueError(f"path: expected a non-empty CSV file, got {path!r} (empty)")
    names = None
    if any(_number(f) is None for f in rows[0]):
        names, rows = [f.strip() for f in rows[0]], rows[1:]
    width = len(names) if names is not None else len(rows[0])
    data = np.empty((len(rows), width))
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{path!r}: row {i}: expected {width} columns, got {len(row)}")
        for j, field in enumerate(row):
            value = _number(field)
            if value is None:
                raise ValueError(f"{path!r}: row {i}, column {_column_name(names, j)}: expected a number, "
                                 f"got {field!r}")
            data[i, j] = value
    return check_table(data, names, what=f"{path!r}"), names


def resolve_columns(spec, names, n_columns, what):
    """Column names or indices -> their indices.

    Parameters
    ----------
    spec : str, int or sequence of str / int
        Names or indices, a list, a comma-separated string or one index.
    names : list of str or None, the table's column names
    n_columns : int, the table's columns
    what : str, the argument named in a ValueError

    Returns
    -------
    list of int, distinct
    """
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, numbers.Integral) else list(spec)
    out = []
    for item in items:
        if isinstance(item, str) and names is not None and item.strip() in names:
            out.append(names.index(item.strip()))
            continue
        try:
            j = int(item)
        except (TypeError, ValueError):
            j = None
        if j is None or not 0 <= j < n_columns:
            known = names if names is not None else f"indices 0..{n_columns - 1}"
            raise ValueError(f"{what}: expected column names or indices among {known}, got {item!r}")
        out.append(j)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{what}: expected distinct columns, got {spec!r}")
    return out


class RunningMoments:
    """Per-feature running mean and variance (Welford, all rows seen so far); std 1 until two rows.

    Parameters
    ----------
    n_features : int, the features C

    Notes
    -----
    Cost O(C) per row.
    """

    def __init__(self, n_features):
        self.count = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)

    def add(self, rows):
        """Fold rows in.

        Parameters
        ----------
        rows : (k, n_features) float array
        """
        for row in rows:
            self.count += 1
            delta = row - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (row - self.mean)

    def std(self):
        """(n_features,) float64 running standard deviations (1 until two rows, and where 0)."""
        if self.count < 2:
            return np.ones_like(self.mean)
        s = np.sqrt(self.m2 / self.count)
        return np.where(s > 0, s, 1.0)


class Series:
    """Online regression on a numeric series, ``batch_size`` streams.

    Parameters
    ----------
    data : (T, C) or (B, T, C) float array, or a path to a CSV / NPY file (see :func:`load_table`)
    inputs : column names or indices (list or comma-separated string), or None for all columns
    targets : column names or indices
    horizon : int >= 1, the target of step t is row t + horizon
    batch_size : int >= 1 streams; with (T, C) data stream b starts at row b·T/B and wraps
        round (with a state reset); with (B, T, C) data it must equal B (one stream per series)
    normalize : bool, per-feature online normalisation of inputs and targets
    dtype : float32 or float64, of the inputs and targets handed out
    names : list of str or None, column names of an array ``data`` (a CSV file brings its own)

    One pass of a stream is T − horizon steps; ``steps_per_pass`` says so.
    Offset streams of one series see each other's rows (as in any batch over
    one text); independent series in a (B, T, C) stack keep the evaluation
    strictly prequential.
    Metrics (:meth:`metrics`) are in the data's units, averaged over steps,
    streams and target columns. Cost O(B·C) per step.
    """

    def __init__(self, data, targets, inputs=None, horizon=1, batch_size=1, normalize=True, dtype=np.float64,
                 names=None):
        if names is not None and (len(names) != np.shape(data)[-1] or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"names: expected one string per column of data, got {names!r}")
        if isinstance(data, (str, os.PathLike)):
            data, names = load_table(data)
        data = check_table(data, names)
        self.names = names
        self.horizon = check_int("horizon", horizon, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        stacked = data.ndim == 3
        if stacked and data.shape[0] != self.batch_size:
            raise ValueError(f"batch_size: expected {data.shape[0]} (one stream per series of data), got {batch_size}")
        self.data = data if stacked else data[None]
        T, C = self.data.shape[1:]
        if T <= self.horizon:
            raise ValueError(f"horizon: expected fewer than the {T} rows of data, got {horizon}")
        self.targets = resolve_columns(targets, names, C, "targets")
        self.inputs = list(range(C)) if inputs is None else resolve_columns(inputs, names, C, "inputs")
        self.n_in, self.n_out = len(self.inputs), len(self.targets)
        self.normalize = bool(normalize)
        self.dtype = check_dtype("dtype", dtype)
        self.steps_per_pass = T - self.horizon
        offsets = np.zeros(self.batch_size, dtype=np.int64) if stacked else \
            np.arange(self.batch_size) * self.steps_per_pass // self.batch_size
        self._pos = offsets
        self._fresh = np.ones(self.batch_size, dtype=bool)
        self._moments = RunningMoments(C)
        self._pending = None          # (raw targets, target mean, target std, naive prediction) of the last step
        self._history = {"model": [], "naive": [], "target": [], "target2": []}

    def _rows(self, offset):
        streams = np.arange(self.batch_size) % len(self.data)
        return self.data[streams, self._pos + offset]

    def next(self):
        """The next row of every stream.

        Returns
        -------
        x : (batch, n_in) array of ``dtype``, normalised inputs
        y : (batch, n_out) array of ``dtype``, normalised targets ``horizon`` rows ahead
        reset : (batch,) bool array, True where a stream (re)starts
        """
        reset = self._fresh.copy()
        now, ahead = self._rows(0), self._rows(self.horizon)
        if self.normalize:
            self._moments.add(now)
            mean, std = self._moments.mean, self._moments.std()
        else:
            mean, std = np.zeros(now.shape[1]), np.ones(now.shape[1])
        t = self.targets
        x = ((now[:, self.inputs] - mean[self.inputs]) / std[self.inputs]).astype(self.dtype)
        y = ((ahead[:, t] - mean[t]) / std[t]).astype(self.dtype)
        self._pending = (ahead[:, t], mean[t], std[t], now[:, t])
        self._pos += 1
        self._fresh = self._pos >= self.steps_per_pass
        self._pos[self._fresh] = 0
        return x, y, reset

    def observe(self, loss, output=None):
        """Record the step's prequential errors from the model's output.

        Parameters
        ----------
        loss : (batch,) float array, the trainer's loss (unused: the errors are taken in data units)
        output : (batch, n_out) float array, the prediction in normalised units

        Returns
        -------
        bool, False (the task interface's "something changed")
        """
        if output is None or self._pending is None:
            raise ValueError("output: expected the model's prediction of the last step (call next() first)")
        target, mean, std, naive = self._pending
        prediction = np.asarray(output, dtype=np.float64) * std + mean
        h = self._history
        h["model"].append(float(np.mean((prediction - target) ** 2)))
        h["naive"].append(float(np.mean((naive - target) ** 2)))
        h["target"].append(target.mean(axis=0))
        h["target2"].append((target ** 2).mean(axis=0))
        return False

    @property
    def steps(self):
        """Steps observed so far (int)."""
        return len(self._history["model"])

    def metrics(self, last=1.0):
        """Prequential metrics over the last fraction ``last`` of the steps so far.

        Parameters
        ----------
        last : float in [0, 1], the fraction of the steps (at least one step)

        Returns
        -------
        dict
            ``{"steps", "mse", "naive_mse", "const_mse", "ratio_naive", "ratio_const"}``: the model's
            MSE, the naive last-value predictor's, the best constant's (the targets' variance over
            those steps, per column, averaged) and the model's MSE divided by each.
        """
        last = check_float("last", last, 0.0, 1.0)
        n = max(1, int(round(self.steps * last))) if self.steps else 0
        if n == 0:
            raise ValueError("metrics: no steps observed yet")
        h = {k: np.asarray(v[-n:]) for k, v in self._history.items()}
        mse, naive = float(h["model"].mean()), float(h["naive"].mean())
        const = float(np.mean(h["target2"].mean(axis=0) - h["target"].mean(axis=0) ** 2))
        return {"steps": n, "mse": mse, "naive_mse": naive, "const_mse": const,
                "ratio_naive": mse / naive if naive > 0 else np.inf,
                "ratio_const": mse / const if const > 0 else np.inf}

    def curve(self, window):
        """The model's MSE averaged over consecutive windows of the steps so far.

        Parameters
        ----------
        window : int >= 1, steps per window

        Returns
        -------
        steps : (k,) int array, the last step of each window
        mse : (k,) float64 array
        """
        window = check_int("window", window, 1)
        se = np.asarray(self._history["model"])
        k = len(se) // window
        return (np.arange(1, k + 1) * window, se[: k * window].reshape(k, window).mean(axis=1))

    def state_dict(self):
        """Stream positions, running moments, metric history and the pending step: a bit-identical resume."""
        return {"pos": self._pos.copy(), "fresh": self._fresh.copy(),
                "moments": (self._moments.count, self._moments.mean.copy(), self._moments.m2.copy()),
                "history": {k: np.array(v) for k, v in self._history.items()},
                "pending": copy.deepcopy(self._pending)}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values (same ``batch_size`` and data).

        Parameters
        ----------
        state : dict, as returned by :meth:`state_dict`
        """
        if len(state["pos"]) != self.batch_size:
            raise ValueError(f"state: expected a Series state with batch_size {self.batch_size}, "
                             f"got {len(state['pos'])}")
        if np.max(state["pos"]) >= self.steps_per_pass:
            raise ValueError(f"state: expected stream positions below the data's {self.steps_per_pass} steps per "
                             f"pass, got {np.max(state['pos'])} (not the same data?)")
        self._pos = np.array(state["pos"], dtype=np.int64)
        self._fresh = np.array(state["fresh"], dtype=bool)
        count, mean, m2 = state["moments"]
        self._moments.count, self._moments.mean, self._moments.m2 = int(count), np.array(mean), np.array(m2)
        self._history = {k: list(np.array(v)) for k, v in state["history"].items()}
        self._pending = copy.deepcopy(state["pending"])
