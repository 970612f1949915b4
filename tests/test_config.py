"""Package-level promises: fast import (nothing heavy imported), show_config, required backends."""
import os
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
