"""Package-level promises: fast import (nothing heavy imported), show_config, required backends."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import kfrtrl


def test_import_pulls_in_no_compiler_or_plotting():
    code = "import sys, kfrtrl; print(sorted(m for m in ('numba', 'matplotlib', 'scipy', 'kfrtrl._cy', 'kfrtrl._numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_show_config_lists_backends(capsys):
    kfrtrl.show_config()
    out = capsys.readouterr().out
    assert f"kfrtrl {kfrtrl.__version__}" in out
    for name in kfrtrl.available_backends():
        assert name in out


@pytest.mark.skipif("KFRTRL_REQUIRE_BACKENDS" not in os.environ, reason="set by CI")
def test_required_backends_are_built():
    wanted = os.environ["KFRTRL_REQUIRE_BACKENDS"].split(",")
    assert set(wanted) <= set(kfrtrl.available_backends())


def test_an_unbuilt_checkout_says_once_what_to_run(tmp_path):
    """A source tree whose Cython kernels are not built: one warning line at import, none after."""
    root = pathlib.Path(kfrtrl.__file__).resolve().parents[1]
    shutil.copy(root / "setup.py", tmp_path)
    shutil.copytree(root / "kernels", tmp_path / "kernels")
    shutil.copytree(root / "kfrtrl", tmp_path / "kfrtrl", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = "import kfrtrl; kfrtrl.OK(kfrtrl.Elman(2, 3)); print(kfrtrl.available_backends())"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    lines = run.stderr.strip().splitlines()
    assert lines == [f"<string>:1: UserWarning: kfrtrl: the compiled kernels of the source checkout {tmp_path} are "
                     "not built; run `pip install -e .` there (or `python setup.py build_ext --inplace`)"]
    assert "cython" not in run.stdout


def test_a_built_or_installed_package_says_nothing():
    assert kfrtrl.backends.unbuilt_checkout_hint() is None
