"""The README's promises: its example runs and learns; CI runs its test command verbatim."""
import pathlib
import re

import numpy as np
import pytest

import kfrtrl
from kfrtrl import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme():
    path = ROOT / "README.md"
    if not path.exists():
        pytest.skip("README.md not next to the tests (installed elsewhere)")
    return path.read_text()


def test_online_training_example_runs_and_learns():
    code = re.search(r"## Online training in 15 lines\n\n```python\n(.*?)```", _readme(), re.S).group(1)
    code = code.replace("for t in range(2000):", "losses = []\nfor t in range(2000):")
    code = code.replace("    target = x[:, :1]", "    losses.append(float((err ** 2).mean()))\n    target = x[:, :1]")
    scope = {}
    exec(compile(code, "README example", "exec"), scope)
    losses = scope["losses"]
    assert np.mean(losses[-200:]) < 0.5 * np.mean(losses[1:200])


def test_ci_runs_the_readme_test_command():
    quick = re.search(r"```bash\n(.*?)```", _readme(), re.S).group(1).splitlines()
    test_cmd = [line.split("#")[0].strip() for line in quick if "pytest" in line]
    assert len(test_cmd) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0] in [line.strip() for line in ci]


def test_torch_example_trains(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="torch not installed (pip install 'kfrtrl[torch]')")
    import torch

    code = re.search(r"## PyTorch\n.*?```python\n(.*?)```", _readme(), re.S).group(1)
    code = code.replace("range(3000)", "range(400)").replace("    opt.step()\n", "    opt.step()\n    losses.append(loss.item())\n")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # torch's pool fights the kernels' threads on a busy machine
    try:
        scope = {"losses": []}
        exec(compile(code, "README torch example", "exec"), scope)
    finally:
        torch.set_num_threads(threads)
    losses = scope["losses"]
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    assert (tmp_path / "rnn.pt").is_file()


def _own_cell():
    """Run the README's "Write your own cell" example; return its namespace."""
    code = re.search(r"## Write your own cell\n.*?```python\n(.*?)```", _readme(), re.S).group(1)
    scope = {"__name__": "readme_cell"}
    exec(compile(code, "README cell example", "exec"), scope)
    return scope


def test_own_cell_example_derivatives_match_finite_differences(capsys):
    from _helpers import sequence_loss

    scope = _own_cell()
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(printed["RTRL"]) < 1e-12 and 0.0 < float(printed["OK"]) < 1.0
    cell, xs, dl_dhs = scope["cell"], scope["xs"][:6], scope["dl_dhs"][:6]
    exact = kfrtrl.bptt(cell, xs, dl_dhs)["W"]
    W, eps = cell.params()["W"], 1e-6
    for i, j in [(0, 0), (3, 5), (15, 18), (7, 19)]:          # recurrent, recurrent, input, bias
        old = W[i, j]
        W[i, j] = old + eps
        up = sequence_loss(cell, xs, dl_dhs)
        W[i, j] = old - eps
        down = sequence_loss(cell, xs, dl_dhs)
        W[i, j] = old
        assert (up - down) / (2 * eps) == pytest.approx(exact[i, j], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("spec", kfrtrl.estimators.names())
def test_every_estimator_and_backend_works_with_the_own_cell(spec, capsys):
    """Exact methods equal bptt; every backend gives numpy's estimate with the same seed."""
    scope = _own_cell()
    cell, xs, dl_dhs = scope["cell"], scope["xs"][:8], scope["dl_dhs"][:8]
    exact = kfrtrl.bptt(cell, xs, dl_dhs)["W"]
    spec = "tbptt:8" if spec == "tbptt" else spec
    totals = {}
    for backend in kfrtrl.available_backends():
        est = train.make_estimator(spec, cell, batch_size=4, rng=5, backend=backend)
        total = 0.0
        for x, dl in zip(xs, dl_dhs):
            est.step(x)
            total = total + est.gradient(dl)["W"]
        totals[backend] = total
    for backend, total in totals.items():
        assert np.abs(total - totals["numpy"]).max() <= 1e-10 * np.abs(exact).max(), backend
    error = np.linalg.norm(totals["numpy"] - exact) / np.linalg.norm(exact)
    assert error < 1e-12 if spec in ("rtrl", "tbptt:8") else 0.0 < error < 10.0
