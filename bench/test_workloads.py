"""Workload benchmarks: the papers' configurations through the whole training loop.

    python -m pytest bench/test_workloads.py --benchmark-only --benchmark-json=workloads.json
    python bench/ratios.py workloads.json        # each step's median / its group's fastest GEMM

One group per configuration, dtype and thread count (:mod:`kfrtrl.workloads`: the copy task,
Elman and RHN n = 128, OK r = 16, KF-RTRL, UORO, batch 16; the character-level model, RHN
n = 256, OK r = 8, batch 32), timed in turn: the two GEMM layouts of the step's
propagation multiply-adds (the ratio takes the faster), then one ``Trainer.step`` per
backend with the task's inputs and resets, and, for OK, with random inputs and no resets
(the kernel benchmarks' steady state). Threads: 1 and all cores; the steps and the GEMMs of
a group run under the same limit. ``KFRTRL_BENCH_WORKLOAD=copy`` (or ``charlm``) restricts
the run to one workload.
"""
import os

import numpy as np
import pytest

from kfrtrl import available_backends, workloads
from kfrtrl.threads import limit

BACKENDS = [b for b in ("numba", "cython") if b in available_backends()]
THREADS = sorted({1, os.cpu_count() or 1})
ROUNDS, WARMUP = 15, 20


def _cases():
    chosen = os.environ.get("KFRTRL_BENCH_WORKLOAD")
    for name, configs in workloads.WORKLOADS.items():
        if chosen and name != chosen:
            continue
        for config in configs:
            for dtype in ("float32", "float64"):
                for threads in THREADS:
                    group = f"{name} {config.cell} n={config.n} {config.spec} B={config.batch} {dtype} {threads}T"
                    members = ["gemm W @ wide", "gemm tall @ W"]
                    members += [f"step/{backend}/task" for backend in BACKENDS]
                    if config.spec.startswith("ok"):
                        members += [f"step/{backend}/random" for backend in BACKENDS]
                    for what in members:
                        yield pytest.param(name, config, dtype, threads, what, id=f"{group} {what}")


@pytest.mark.parametrize("name, config, dtype, threads, what", list(_cases()))
def test_workload_member(benchmark, name, config, dtype, threads, what):
    """A group member: one GEMM layout of the bound, or one backend's training step."""
    benchmark.group = f"{name} {config.cell} n={config.n} {config.spec} B={config.batch} {dtype} {threads}T"
    info = dict(workload=name, cell=config.cell, n=config.n, spec=config.spec, batch=config.batch,
                dtype=dtype, threads=threads)
    dtype = np.dtype(dtype)
    if what.startswith("gemm"):
        trainer, _ = workloads.build(config, name, "numpy", dtype, threads)
        columns = workloads.bound_columns(trainer.estimator, config.n)
        gen = np.random.default_rng(0)
        W = gen.standard_normal((config.n, config.n)).astype(dtype)
        X = gen.standard_normal((config.n, columns) if "wide" in what else (columns, config.n)).astype(dtype)
        left, right = (W, X) if "wide" in what else (X, W)
        out = np.empty((left.shape[0], right.shape[1]), dtype=dtype)
        benchmark.extra_info.update(info, kind="gemm", flops=2 * config.n * config.n * columns,
                                    gemm_shape=[left.shape[0], left.shape[1], right.shape[1]])
        with limit(threads):
            benchmark.pedantic(np.matmul, args=(left, right), kwargs={"out": out}, rounds=ROUNDS,
                               warmup_rounds=2)
        return
    _, backend, inputs = what.split("/")
    trainer, next_batch = workloads.build(config, name, backend, dtype, threads, inputs)
    benchmark.extra_info.update(info, kind="step", estimator=config.spec, backend=f"{backend}, {inputs}")

    def batch():
        return next_batch(), {}

    with limit(threads):
        benchmark.pedantic(trainer.step, setup=batch, rounds=ROUNDS, warmup_rounds=WARMUP)
