"""Thread control: one context manager for BLAS, numba and OpenMP thread counts.

Nothing is changed at import. ``limit(n)`` sets every loaded BLAS pool and
numba's thread count (if numba is already imported) to ``n`` and restores
both on exit (``limit(n, blas=1)``: numba at ``n``, BLAS at one thread);
``blas_limit(n)`` does the same for the BLAS pools only. The Cython/OpenMP
kernels take their thread count as an explicit argument, so they need no
global setting.

Why BLAS is held at one thread while the compiled kernels run in parallel:
OpenBLAS's worker threads keep spinning for about 2^28 cycles (~0.1 s) after
a multi-threaded call before they sleep, so one small multi-threaded product
(a cell's forward pass, the readout) leaves a worker busy on a core that the
next parallel kernel needs; a 2-thread OK step measured no faster than one
thread that way (docs/performance.md, "Threads in the training loop").

Both are cheap enough to wrap every step (~2 µs when nothing changes, about
1 µs more per pool that does): the BLAS libraries are found once by
threadpoolctl and looked up again only when an import has added modules
since (a new extension may bring its own BLAS, as scipy does), and a pool
is set only when its count differs from the wanted one.
"""
import statistics
import sys

_blas = {"n_modules": -1, "pools": []}


def _blas_pools():
    """threadpoolctl's controllers of the loaded BLAS libraries (re-scanned after new imports)."""
    if len(sys.modules) != _blas["n_modules"]:
        from threadpoolctl import ThreadpoolController

        _blas["pools"] = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        _blas["n_modules"] = len(sys.modules)
    return _blas["pools"]


class limit:
    """Context manager: at most ``n_threads`` BLAS and numba threads in the body, then restore.

    Parameters
    ----------
    n_threads : int >= 1
        Thread count of every loaded BLAS pool (through threadpoolctl) and of numba (capped at
        ``NUMBA_NUM_THREADS``; only if numba is already imported) inside the ``with`` block.
    numba : bool
        False leaves numba's count alone (:func:`blas_limit`).
    blas : int >= 1 or None
        The BLAS pools' count in the body, if not ``n_threads`` (1: the compiled kernels
        parallelise and no BLAS worker thread is woken; see the module's docstring).

    Notes
    -----
    Cost: about 2 µs on entry and exit when nothing changes, about 1 µs more per pool that
    does. The Cython/OpenMP kernels take their count as an argument and are not affected.

    Examples
    --------
    >>> import numpy as np
    >>> from kfrtrl.threads import limit
    >>> with limit(1):
    ...     c = np.ones((64, 64)) @ np.ones((64, 64))      # single-threaded BLAS
    """

    def __init__(self, n_threads, numba=True, blas=None):
        self.n_threads = n_threads
        self.blas = n_threads if blas is None else blas
        self.numba = sys.modules.get("numba") if numba else None
        self.changed = []
        self.old_numba = None

    def __enter__(self):
        for pool in _blas_pools():
            old = pool.get_num_threads()
            if old != self.blas:
                pool.set_num_threads(self.blas)
                self.changed.append((pool, old))
        if self.numba is not None:
            old, new = self.numba.get_num_threads(), min(self.n_threads, self.numba.config.NUMBA_NUM_THREADS)
            if old != new:
                self.numba.set_num_threads(new)
                self.old_numba = old
        return self

    def __exit__(self, *exc):
        for pool, old in self.changed:
            pool.set_num_threads(old)
        if self.old_numba is not None:
            self.numba.set_num_threads(self.old_numba)
        return False


def blas_limit(n_threads):
    """Context manager: every loaded BLAS pool at ``n_threads`` threads in the body, then restored.

    Parameters
    ----------
    n_threads : int >= 1

    Returns
    -------
    limit
        ``limit(n_threads, numba=False)``.
    """
    return limit(n_threads, numba=False)


class AutoThreads:
    """The thread count behind ``n_threads=None``: all cores, or one thread while that is faster.

    A second core pays off only while it is free: when another process keeps one busy, a parallel
    step is no faster than one thread and its spin-waits make it slower (docs/performance.md,
    "Threads in the training loop"). So the count is chosen by timing the caller's own steps:
    after ``warmup`` steps at all cores (not timed: compilation, first touch), a block of steps at
    each count (one untimed step after the switch, then ``probe`` timed; the order alternates from
    one probe to the next); all cores are kept if their median is below ``margin`` times one
    thread's, else one thread, for the next ``period`` steps; then it probes again. The probes
    cost about ``(probe + 1) / period`` (3.5 % at the defaults) of the slower count's excess.

    Parameters
    ----------
    cores : int >= 2, the all-cores count
    period, probe, warmup : int >= 1
    margin : float, how much faster all cores must be (a tie leaves the core to others)

    Use :meth:`take` before a step (-> its thread count) and :meth:`record` after it.
    """

    def __init__(self, cores, period=200, probe=6, warmup=3, margin=0.97):
        self.cores, self.period, self.probe, self.margin = cores, period, probe, margin
        #: steps (calls of :meth:`take`) before the first choice: the warm-up and the first probe
        self.first_choice = warmup + 2 * (probe + 1)
        self.current = cores
        self._queue = [(cores, False)] * warmup        # (count, timed) of the next steps
        self._pending = None
        self._times = {}
        self._ones_first = False

    def take(self):
        """The thread count of the next step.

        Returns
        -------
        int
            1 or ``cores``.
        """
        if not self._queue:
            self._refill()
        self._pending = self._queue.pop()
        return self._pending[0]

    def record(self, seconds):
        """Note the duration of the step begun by the last :meth:`take`.

        Parameters
        ----------
        seconds : float, its wall-clock time
        """
        count, timed = self._pending
        if timed:
            self._times.setdefault(count, []).append(seconds)

    def _refill(self):
        if self._times:                                 # a probe ended: keep the faster count
            median = {c: statistics.median(t) for c, t in self._times.items()}
            self.current = self.cores if median[self.cores] < self.margin * median[1] else 1
            self._times = {}
            self._queue = [(self.current, False)] * self.period
            return
        order = [1, self.cores] if self._ones_first else [self.cores, 1]
        self._ones_first = not self._ones_first
        blocks = [[(c, False)] + [(c, True)] * self.probe for c in order]
        self._queue = (blocks[0] + blocks[1])[::-1]      # popped from the end
