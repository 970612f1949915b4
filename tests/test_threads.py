"""kfrtrl.threads: limit/blas_limit set every BLAS pool (also ones loaded later) and restore them."""
import subprocess
import sys
import textwrap

import numba
from threadpoolctl import threadpool_info

from kfrtrl.threads import blas_limit, limit


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
