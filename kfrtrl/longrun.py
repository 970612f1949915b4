"""Long runs: a curve log (CSV or JSON lines) and periodic atomic checkpoints, continued on resume.

:func:`train_to` trains until the trainer has made a given number of steps,
logs a row every few steps and writes a checkpoint every few steps; a killed
run restarted from its last checkpoint (:func:`kfrtrl.train.load_checkpoint`
and :class:`CurveLog` with ``resume_step``) continues the same curve.

A row is ``{"step": int, <value columns>, "seconds": float}`` with ``seconds`` the
training time since the start of the run (summed over resumed pieces). The
format follows the path: ``.jsonl`` or ``.json`` give JSON lines, anything else
CSV with a header. Every row is flushed as written, so a killed run leaves a
readable log; :class:`CurveLog` with ``resume_step`` drops the rows a resumed
run will write again (those after its checkpoint) so the curve continues
without duplicates.
"""
import csv
import io
import json
import os
import time

from ._validation import check_int
from .checkpoint import atomic_write
from .train import save_checkpoint


def _is_jsonl(path):
    return str(path).endswith((".jsonl", ".json"))


def read_curve(path):
    """The rows of a curve log as a list of dicts (numbers as int or float).

    Parameters
    ----------
    path : str or os.PathLike, a CSV or JSON-lines curve log (:class:`CurveLog`)

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        Naming the path if a row cannot be read.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        if _is_jsonl(path):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"log: expected a kfrtrl curve log in {str(path)!r}, got an unreadable row ({exc})") from None


def _number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


class CurveLog:
    """An open curve log with columns ``["step", *values, "seconds"]``.

    Parameters
    ----------
    path : str, the log file (CSV, or JSON lines for ``.jsonl`` / ``.json``)
    values : list of str, the value columns (e.g. ``["T_cur", "running_loss"]``)
    resume_step : int >= 0 or None. None starts a new log (an existing file is
        replaced); an int keeps the existing rows up to that step (the file is
        rewritten atomically without the later ones) and :attr:`seconds` is the
        last kept row's time, from which the resumed run counts on.

    Use :meth:`write` per logged step and :meth:`close` at the end (or ``with``).
    """

    def __init__(self, path, values, resume_step=None):
        self.path = str(path)
        self.columns = ["step", *values, "seconds"]
        self.seconds = 0.0
        kept = []
        if resume_step is not None and os.path.exists(self.path):
            resume_step = check_int("resume_step", resume_step, 0)
            kept = [row for row in read_curve(self.path) if row["step"] <= resume_step]
            self.seconds = float(kept[-1]["seconds"]) if kept else 0.0
        text = self._header() + "".join(self._line(row) for row in kept)
        atomic_write(self.path, lambda fh: fh.write(text.encode("utf-8")))
        self._fh = open(self.path, "a", encoding="utf-8")

    def _header(self):
        return "" if _is_jsonl(self.path) else ",".join(self.columns) + "\n"

    def _line(self, row):
        if _is_jsonl(self.path):
            return json.dumps({k: row[k] for k in self.columns}) + "\n"
        return ",".join(str(row[k]) for k in self.columns) + "\n"

    def write(self, step, seconds, **values):
        """Append one row (flushed).

        Parameters
        ----------
        step : int
        seconds : float, since the run's start
        **values
            One number per value column of the log.
        """
        row = {"step": int(step), **values, "seconds": round(float(seconds), 3)}
        missing = [k for k in self.columns if k not in row]
        if missing:
            raise ValueError(f"values: expected the columns {self.columns[1:-1]}, missing {missing}")
        self._fh.write(self._line(row))
        self._fh.flush()

    def close(self):
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def train_to(trainer, task, steps, observe=None, log=None, log_every=100, checkpoint=None, save_every=None,
             callback=None, config=None):
    """Train online until ``trainer.steps == steps``, logging and saving on the way.

    Parameters
    ----------
    trainer : kfrtrl.train.Trainer (possibly restored from a checkpoint: it counts on)
    task : a task of :mod:`kfrtrl.tasks`
    steps : int >= 0, the run's total number of steps (not the number still to make)
    observe : callable(trainer, task) -> {column: value} or None, called every ``log_every`` steps
        and at ``steps``
    log : CurveLog or None, receiving each of those rows
    log_every : int >= 1
    checkpoint : path or None; written (:func:`kfrtrl.train.save_checkpoint`, atomic: a kill during a
        save leaves the previous one) every ``save_every`` steps (if given) and at ``steps``
    save_every : int >= 1 or None
    callback : callable(step) or None, after every step
    config : dict or None, the run's configuration recorded in each checkpoint (a resume is checked
        against it by :func:`kfrtrl.train.load_checkpoint`)

    Returns the training seconds of the run so far (including those of resumed pieces, from ``log``).
    """
    steps = check_int("steps", steps, 0)
    log_every = check_int("log_every", log_every, 1)
    save_every = None if save_every is None else check_int("save_every", save_every, 1)
    start = time.perf_counter() - (log.seconds if log is not None else 0.0)
    while trainer.steps < steps:
        x, y, reset = task.next()
        task.observe(trainer.step(x, y, reset))
        done = trainer.steps
        if observe is not None and (done % log_every == 0 or done == steps):
            row = observe(trainer, task)
            if log is not None:
                log.write(done, time.perf_counter() - start, **row)
        if checkpoint is not None and (done == steps or (save_every and done % save_every == 0)):
            save_checkpoint(checkpoint, trainer, task, config)
        if callback is not None:
            callback(done)
    return time.perf_counter() - start
