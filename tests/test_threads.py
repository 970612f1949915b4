"""kfrtrl.threads: limit/blas_limit set every BLAS pool (also ones loaded later) and restore them; the
estimators' step context holds BLAS at one thread beside parallel kernels, over the whole training step."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from _helpers import COMPILED
from kfrtrl import Elman
from kfrtrl.threads import AutoThreads, blas_limit, limit
from kfrtrl.train import Trainer, make_estimator


def _blas_counts():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_limit_sets_and_restores_blas_and_numba():
    before, numba_before = _blas_counts(), numba.get_num_threads()
    with limit(1):
        assert _blas_counts() == [1] * len(before)
        assert numba.get_num_threads() == 1
    assert _blas_counts() == before
    assert numba.get_num_threads() == numba_before


def test_blas_limit_leaves_numba_alone_and_restores_after_an_error():
    before, numba_before = _blas_counts(), numba.get_num_threads()
    try:
        with blas_limit(1):
            assert _blas_counts() == [1] * len(before)
            assert numba.get_num_threads() == numba_before
            raise KeyError("inside")
    except KeyError:
        pass
    assert _blas_counts() == before


def test_limit_reaches_a_blas_library_imported_after_the_first_call():
    # a fresh interpreter: numpy's BLAS is seen first, scipy's own BLAS only after its import
    code = textwrap.dedent("""
        import numpy
        from threadpoolctl import threadpool_info
        from kfrtrl.threads import limit
        with limit(1):
            pass
        import scipy.linalg
        files = lambda: {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        before = files()
        with limit(1):
            inside = files()
        print(len(before), set(inside.values()), files() == before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["{1}", "True"], out


def test_limit_can_hold_blas_at_one_thread_while_numba_takes_n():
    before, numba_before = _blas_counts(), numba.get_num_threads()
    with limit(2, blas=1):
        assert _blas_counts() == [1] * len(before)
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert _blas_counts() == before and numba.get_num_threads() == numba_before


@pytest.mark.parametrize("backend, batch, n_threads, blas", [
    *[(b, 4, 2, 1) for b in COMPILED],          # the kernels parallelise over samples: no BLAS worker woken
    *[(b, 1, 2, 1) for b in COMPILED],          # one sample: over its row blocks, still no BLAS worker
    ("numpy", 4, 2, 2),                          # the reference's parallelism is BLAS's
    ("numpy", 1, 2, 2),
    ("numpy", 4, 1, 1),
])
def test_estimator_thread_context_gives_blas_one_thread_only_beside_parallel_kernels(backend, batch, n_threads,
                                                                                    blas):
    est = make_estimator("ok:2", Elman(3, 5, rng=0), batch_size=batch, rng=0, backend=backend, n_threads=n_threads)
    numba_before = numba.get_num_threads()
    with est.threads():
        assert set(_blas_counts()) == {blas}
        # one thread: the kernels run serially whatever numba's count, which is left alone
        assert numba.get_num_threads() == (numba_before if n_threads == 1
                                           else min(n_threads, numba.config.NUMBA_NUM_THREADS))
    assert numba.get_num_threads() == numba_before


@pytest.mark.skipif(not COMPILED, reason="no compiled backend")
def test_trainer_runs_readout_and_optimizer_in_the_estimator_thread_context(monkeypatch):
    est = make_estimator("ok:2", Elman(3, 5, rng=0), batch_size=4, rng=0, backend=COMPILED[0], n_threads=2)
    trainer = Trainer(est, 3, rng=0)
    seen = []
    for obj, name in ((trainer.readout, "backward"), (trainer.optimizer, "update")):
        original = getattr(obj, name)

        def spy(*args, _original=original, **kwargs):
            seen.append(tuple(_blas_counts()))
            return _original(*args, **kwargs)

        monkeypatch.setattr(obj, name, spy)
    gen = np.random.default_rng(0)
    for _ in range(3):
        trainer.step(gen.standard_normal((4, 3)), gen.integers(0, 3, 4))
    assert len(seen) == 6 and {c for counts in seen for c in counts} == {1}


def _drive(auto, seconds_of, steps):
    """Counts taken over ``steps`` steps whose durations are ``seconds_of(count)``."""
    taken = []
    for _ in range(steps):
        count = auto.take()
        taken.append(count)
        auto.record(seconds_of(count))
    return taken


@pytest.mark.parametrize("seconds, kept", [({1: 1.0, 4: 2.0}, 1), ({1: 2.0, 4: 1.0}, 4), ({1: 1.0, 4: 0.99}, 1)])
def test_auto_threads_keeps_the_faster_count_and_probes_again_each_period(seconds, kept):
    auto = AutoThreads(4, period=5, probe=2, warmup=3, margin=0.97)
    # untimed steps (warm-up: compilation; the first after a switch) must not decide
    durations = [100.0] * 3 + [100.0, seconds[4], seconds[4], 100.0, seconds[1], seconds[1]]
    taken = _drive(auto, lambda c: durations.pop(0) if durations else seconds[c], 3 + 6 + 5 + 6 + 5)
    assert taken[:3] == [4, 4, 4]
    assert taken[3:9] == [4, 4, 4, 1, 1, 1]             # the first probe: all cores first
    assert taken[9:14] == [kept] * 5 and auto.current == kept
    assert taken[14:20] == [1, 1, 1, 4, 4, 4]           # the next probe: the other order
    assert taken[20:] == [kept] * 5


def test_first_choice_counts_the_steps_until_the_count_is_chosen():
    auto = AutoThreads(4)                                # the defaults: warm-up 3, probes of 1 + 6 steps
    assert auto.first_choice == 17
    taken = _drive(auto, lambda c: 1.0 if c == 4 else 2.0, auto.first_choice + 5)
    assert taken[auto.first_choice - 1] == 1            # the last step of the first probe (one thread)
    assert taken[auto.first_choice:] == [4] * 5         # then the chosen count


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="n_threads=None is a fixed count on one core")
def test_workload_timing_waits_until_the_default_has_chosen_its_count(monkeypatch):
    from kfrtrl import workloads

    est = make_estimator("kf", Elman(3, 5, rng=0), batch_size=2, rng=0, backend="numpy")
    assert workloads.settled_warmup(est, 4) == est.auto_threads.first_choice
    assert workloads.settled_warmup(est, 40) == 40
    fixed = make_estimator("kf", Elman(3, 5, rng=0), batch_size=2, rng=0, backend="numpy", n_threads=2)
    assert fixed.auto_threads is None and workloads.settled_warmup(fixed, 4) == 4
    warmups = []
    monkeypatch.setitem(workloads.WORKLOADS, "copy", (workloads.Config("elman", 4, "kf", 2),))
    monkeypatch.setattr(workloads, "time_interleaved", lambda *args: warmups.append(args[-1]) or (1.0, 1.0, "x"))
    workloads.measure("copy", backends=("numpy",), dtypes=("float64",), threads=(1, None), steps=1, warmup=2)
    assert warmups == [2, est.auto_threads.first_choice]


@pytest.mark.parametrize("n_threads", [1, 2])
def test_workload_timing_lets_the_gemm_threads_sleep_before_any_step(monkeypatch, n_threads):
    """With several threads, BLAS's workers spin after the layout tries and each round of GEMMs:
    a pause of PARK_S comes before the warm-up (where the default's first probe runs) and before
    each round's steps; with one thread there is nothing to wait for."""
    from kfrtrl import workloads

    events = []

    class Trainer:
        cell = Elman(3, 4, rng=0)

        def step(self, *batch):
            events.append("step")

    monkeypatch.setattr(workloads.time, "sleep", lambda s: events.append(("sleep", s)))
    def timed(fn, *args):                                # the GEMMs run, the timed steps are only noted
        events.append("gemm" if fn is np.matmul else "timed step")
        if fn is np.matmul:
            fn(*args)
        return 1.0

    monkeypatch.setattr(workloads, "_timed", timed)
    workloads.time_interleaved(Trainer(), lambda: (None, None, None), 4, 8, n_threads, steps=2, warmup=3)
    pause = [("sleep", workloads.PARK_S)] if n_threads > 1 else []
    tries = ["gemm"] * (3 * len(workloads._gemm_operands(4, 8, np.float64)))
    rewarm = ["step"] * workloads.REWARM if n_threads > 1 else []
    assert events == tries + pause + ["step"] * 3 + ["gemm"] * 2 + pause + rewarm + ["timed step"] * 2


@pytest.mark.skipif(not COMPILED or (os.cpu_count() or 1) < 2, reason="needs a compiled backend and 2 cores")
def test_default_threads_follow_the_steps_own_timing(monkeypatch):
    from kfrtrl.estimators import _base

    est = make_estimator("ok:2", Elman(3, 5, rng=0), batch_size=4, rng=0, backend=COMPILED[0])
    est._auto = AutoThreads(os.cpu_count(), period=3, probe=1, warmup=1)
    numba_before = numba.get_num_threads()
    clock = [0.0]
    monkeypatch.setattr(_base.time, "perf_counter", lambda: clock[0])
    seen = []
    forward = est.cell.forward

    def timed_forward(*args):                            # one thread "runs" ten times faster
        seen.append((est.n_threads, numba.get_num_threads(), _blas_counts()[0]))
        clock[0] += 0.1 if est.n_threads == 1 else 1.0
        return forward(*args)

    monkeypatch.setattr(est.cell, "forward", timed_forward)
    gen = np.random.default_rng(0)
    for _ in range(1 + 4 + 3):
        est.step(gen.standard_normal((4, 3)))
    cores = min(os.cpu_count(), numba.config.NUMBA_NUM_THREADS)
    assert [s[0] for s in seen] == [os.cpu_count()] * 3 + [1] * 2 + [1] * 3   # warm-up, probe, period
    # all cores: numba at all cores, BLAS at one; one thread: BLAS at one, numba's count left alone
    assert seen[0][1:] == (cores, 1) and seen[-1][1:] == (numba_before, 1)
    assert est.n_threads == os.cpu_count()                # between steps: all cores, nothing under way


@pytest.mark.skipif(not COMPILED, reason="no compiled backend")
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("cell, spec, batch", [("elman", "rtrl", 1), ("gru", "rtrl", 1), ("gru", "ok:3", 1),
                                               ("elman", "kf", 3), ("gru", "kf", 3), ("lstm", "ok:3", 2)])
def test_training_is_bit_identical_on_one_and_several_threads(monkeypatch, backend, cell, spec, batch):
    """The same parameters after 6 training steps on 1 and 2 threads, also where one sample's GEMMs
    are cut in blocks (batch below the cores: 3 pretended here), so the default count, which
    switches between one thread and all cores, never changes the result."""
    import kfrtrl

    monkeypatch.setattr("kfrtrl._thresholds.CORES", 3)
    monkeypatch.setattr("kfrtrl._thresholds.PARALLEL_MIN_WORK", 0)
    params = []
    for n_threads in (1, 2):
        gen = np.random.default_rng(0)
        model = {"elman": kfrtrl.Elman, "gru": kfrtrl.GRU, "lstm": kfrtrl.LSTM}[cell](3, 65, rng=1)
        trainer = Trainer(make_estimator(spec, model, batch_size=batch, rng=2, backend=backend, n_threads=n_threads),
                          4, rng=3)
        for _ in range(6):
            trainer.step(gen.standard_normal((batch, 3)), gen.integers(0, 4, batch))
        params.append({k: v.copy() for k, v in model.params().items()})
    for name in params[0]:
        np.testing.assert_array_equal(params[0][name], params[1][name])
