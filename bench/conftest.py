"""Shared fixtures of the benchmark suites (bench/ is not in testpaths: run it explicitly).

``KFRTRL_BENCH_THREADS=k`` sets the threads BLAS and the kernels may use in
bench/test_kernels.py (default 1: stable timings on a shared machine).
"""
import os

import pytest

from kfrtrl.threads import limit


@pytest.fixture(scope="session")
def bench_threads():
    """KFRTRL_BENCH_THREADS as an int >= 1 (1 when unset)."""
    text = os.environ.get("KFRTRL_BENCH_THREADS", "1")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"KFRTRL_BENCH_THREADS: expected an integer >= 1, got {text!r}")
    return int(text)


@pytest.fixture
def limited_threads(bench_threads):
    """Run the whole test (calibration and rounds) with at most ``bench_threads`` BLAS/numba threads."""
    with limit(bench_threads):
        yield bench_threads
