"""The default thread count against one thread while another process keeps a core busy.

    python -m pytest bench/test_busy_core.py --benchmark-only --benchmark-json=busy.json

One group per configuration (the copy task's OK r = 16 steps, Elman and RHN, and KF-RTRL on the
RHN, n = 128, batch 16; :mod:`kfrtrl.workloads`) and backend, with two members timed while a
child process spins on one core: ``Trainer.step`` built with ``n_threads=1`` and with the default
``n_threads=None`` (:class:`kfrtrl.threads.AutoThreads`). The default must not be slower. On a
one-core machine the file is skipped.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from kfrtrl import available_backends, workloads
from kfrtrl.workloads import Config

CONFIGS = [Config("elman", 128, "ok:16", 16), Config("rhn", 128, "ok:16", 16), Config("rhn", 128, "kf", 16)]
BACKENDS = [b for b in ("numba", "cython") if b in available_backends()]
ROUNDS, WARMUP = 20, 15

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")


@pytest.fixture(scope="module")
def busy_core():
    """A child process spinning on one core for the module's benchmarks."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    child.kill()
    child.wait()


@pytest.mark.parametrize("threads", [1, None], ids=["1 thread", "default"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.cell} {c.spec}")
def test_step_beside_a_busy_core(benchmark, busy_core, config, backend, threads):
    """One member: the float32 copy step of ``config`` on ``backend`` with ``threads``."""
    benchmark.group = f"busy core: copy {config.cell} n={config.n} {config.spec} B={config.batch} {backend}"
    trainer, next_batch = workloads.build(config, "copy", backend, np.dtype("float32"), threads)
    benchmark.extra_info.update(kind="step", estimator=config.spec,
                                backend=f"{backend}, {'default' if threads is None else '1 thread'}")

    def batch():
        return next_batch(), {}

    benchmark.pedantic(trainer.step, setup=batch, rounds=ROUNDS,
                       warmup_rounds=workloads.settled_warmup(trainer.estimator, WARMUP))
