"""The Cython/OpenMP build: what was built, and the serial (no OpenMP) build.

Only what the build itself can show. Skipped when the extensions are not built
(``pip install .`` or ``python setup.py build_ext --inplace``); CI makes that an
error through ``KFRTRL_REQUIRE_BACKENDS`` (tests/test_config.py). The kernels'
results on every compiled backend: tests/test_kernels.py, tests/test_kernel_properties.py
and tests/test_backends.py.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

cy = pytest.importorskip("kfrtrl._cy", reason="Cython extensions not built")

ROOT = Path(__file__).resolve().parents[1]


# ---- what was built ----


def _calls_openmp(path):
    """True if the shared object calls an OpenMP runtime (GCC's libgomp or LLVM's libomp)."""
    data = Path(path).read_bytes()
    return b"GOMP_parallel" in data or b"__kmpc_fork_call" in data


def test_openmp_enabled_reports_how_the_extensions_were_built():
    from kfrtrl._cy import elementwise, propagate, reduce

    flag = cy.openmp_enabled()
    assert isinstance(flag, bool)
    for module in (elementwise, propagate, reduce):
        assert _calls_openmp(module.__file__) == flag, module.__file__


def test_exposes_exactly_the_reference_kernels():
    import inspect

    import kfrtrl._reference as reference

    assert sorted(cy.__all__) == sorted(reference.__all__)
    for name in reference.__all__:
        params = list(inspect.signature(getattr(reference, name)).parameters)
        assert list(inspect.signature(getattr(cy, name)).parameters) == params, name


SERIAL_CHECK = """
import importlib.util, sys
import numpy as np
import kfrtrl._reference as ref

def load(name):
    spec = importlib.util.spec_from_file_location("kfrtrl._cy." + name, sys.argv[1 + (name == "reduce")])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

prop, red = load("propagate"), load("reduce")
gen = np.random.default_rng(0)
V, W = gen.standard_normal((3, 4, 10)), gen.standard_normal((20, 8))
lam, dz = gen.standard_normal((3, 2, 2, 5)), gen.standard_normal((3, 2, 4, 5))
o1, o2 = np.empty_like(V), np.empty_like(V)
ref.jvp_blocks(V, V[:, :, :5], W[:, :5].T, lam, dz, o1, 1)
prop.jvp_blocks(V, V[:, :, :5], W[:, :5].T, lam, dz, o2, 2)
Vk, Uk = gen.standard_normal((3, 3, 16)), gen.standard_normal((3, 3, 7))
s = np.array([[1.0, -1.0, 1.0]] * 3)
outs = [(np.empty((3, 2, 16)), np.empty((3, 2, 7))) for _ in range(2)]
ref.ok_reduce(Vk, Uk, s, *outs[0], 1)
red.ok_reduce(Vk, Uk, s, *outs[1], 2)
A, u, W = gen.standard_normal((3, 2, 4, 4)), gen.standard_normal((3, 2, 7)), gen.standard_normal((4, 7))
lam, dz, a = gen.uniform(0.0, 1.0, (3, 4)), gen.standard_normal((3, 4)), gen.standard_normal((3, 7))
states = [[A.copy(), np.tile(np.eye(2, 3), (3, 1, 1)), np.zeros((3, 1, 4))] for _ in range(2)]
u_new = [np.empty_like(u) for _ in range(2)]
ref.ok_fused(*states[0], u, W, lam, dz, a, s, None, u_new[0], None, 1)
red.ok_fused(*states[1], u, W, lam, dz, a, s, None, u_new[1], None, 2)
fused = [(ref.reduce.ok_factors(*st), un) for st, un in zip(states, u_new)]
err = max(np.abs(o2 - o1).max(), *(np.abs(x - y).max() for x, y in [*zip(*outs), *zip(*fused)]))
print(prop.openmp_enabled(), red.openmp_enabled(), err)
"""


@pytest.mark.skipif(os.environ.get("KFRTRL_TEST_SERIAL_BUILD") != "1",
                    reason="builds the extensions again (~30 s): set KFRTRL_TEST_SERIAL_BUILD=1")
def test_serial_build_without_openmp(tmp_path):
    """KFRTRL_NO_OPENMP=1 builds serial extensions that still match the reference."""
    shutil.copy(ROOT / "setup.py", tmp_path)
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("*.c", "*.html"))
    env = dict(os.environ, KFRTRL_NO_OPENMP="1")
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "tmp"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "building the Cython kernels serial (no OpenMP) (KFRTRL_NO_OPENMP=1)" in build.stdout
    sos = {p.name.split(".")[0]: p for p in (tmp_path / "lib" / "kfrtrl" / "_cy").glob("*.so")}
    assert sorted(sos) == sorted(p.stem for p in (ROOT / "kernels").glob("*.pyx"))
    assert not any(_calls_openmp(p) for p in sos.values())
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SERIAL_CHECK), str(sos["propagate"]), str(sos["reduce"])],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    prop_omp, red_omp, err = run.stdout.split()
    assert (prop_omp, red_omp) == ("False", "False")
    assert float(err) <= 1e-12
