"""Timing a call and the size budget of the scaling grid (used by :mod:`.measure`).

:func:`time_per_call` times a function directly (untimed warm-up calls, then
rounds long enough for the clock); :class:`Budget` predicts from the sizes
measured so far whether the next one would be too slow or too large.
"""
import math
import time
from collections import defaultdict

from .report import format_bytes

#: a size is skipped when one step is predicted to take longer than this ...
MAX_STEP_SECONDS = 2.0
#: ... or its estimator state (whole batch) to take more bytes than this
MAX_STATE_BYTES = 2 * 2**30


def calls_per_round(fn, min_time=0.02):
    """Calls of ``fn`` per timed round so that a round lasts about ``min_time`` s (one call timed to decide).

    Parameters
    ----------
    fn : callable without arguments
    min_time : float > 0, seconds

    Returns
    -------
    int in [1, 1000]
    """
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(1, min(1000, math.ceil(min_time / max(once, 1e-9))))


def time_per_call(fn, repeats=5, warmup=2, min_time=0.02):
    """Seconds per call of ``fn``, one value per repeat.

    Parameters
    ----------
    fn : callable without arguments
    repeats : int >= 1
    warmup : int >= 0, untimed calls first (compilation, caches)
    min_time : float > 0, seconds each repeat lasts at least (about)

    Returns
    -------
    list of float
    """
    for _ in range(warmup):
        fn()
    k = calls_per_round(fn, min_time)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(k):
            fn()
        times.append((time.perf_counter() - start) / k)
    return times


class Budget:
    """Skips sizes predicted to be too slow or too large, from the sizes measured so far.

    Each key (e.g. cell, estimator, batch, dtype) keeps its measured (n, seconds,
    bytes); the next size is predicted by extending the log-log line through
    the last two points (slope clipped to [1, 4], 4 being exact RTRL's
    n⁴, so that one noisy point cannot stop a cheap estimator; one point: no
    prediction).

    Parameters
    ----------
    max_seconds : float, per step
    max_bytes : float, of estimator state (whole batch)
    """

    def __init__(self, max_seconds=MAX_STEP_SECONDS, max_bytes=MAX_STATE_BYTES):
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self._seen = defaultdict(list)

    def record(self, key, n, seconds, nbytes):
        """Note that size n took ``seconds`` per step and ``nbytes`` of state (whole batch).

        Parameters
        ----------
        key : hashable, e.g. (cell, estimator, batch, dtype)
        n : int
        seconds, nbytes : float
        """
        self._seen[key].append((n, seconds, nbytes))

    def skip_reason(self, key, n):
        """Whether to measure size n of ``key``.

        Parameters
        ----------
        key : hashable, as given to :meth:`record`
        n : int

        Returns
        -------
        str or None
            None to measure, or why not (a short sentence).
        """
        points = sorted(self._seen[key])
        if len(points) < 2:
            return None
        (n0, t0, b0), (n1, t1, b1) = points[-2:]
        t, b = _extend(n0, t0, n1, t1, n), _extend(n0, b0, n1, b1, n)
        if t > self.max_seconds:
            return f"predicted {t:.3g} s per step > {self.max_seconds:g} s"
        if b > self.max_bytes:
            return f"predicted state of {format_bytes(b)} > {format_bytes(self.max_bytes)}"
        return None


def _extend(n0, y0, n1, y1, n):
    slope = math.log(y1 / y0) / math.log(n1 / n0) if y0 > 0 and y1 > 0 and n1 != n0 else 1.0
    return y1 * (n / n1) ** min(4.0, max(1.0, slope))
