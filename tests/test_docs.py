"""The API documentation: help() of every estimator and cell shows its parameters, cost and reference,
and the examples in the docstrings run."""
import doctest
import importlib
import inspect
import re

import pytest

import kfrtrl
from kfrtrl import cells, estimators

ESTIMATORS = [cls for cls in vars(estimators).values() if inspect.isclass(cls) and cls.__module__.startswith("kfrtrl")
              and getattr(cls, "name", None)]
CELLS = [cls for cls in vars(cells).values() if inspect.isclass(cls) and issubclass(cls, cells.Cell) and cls is not cells.Cell]
DOCTESTED = ["kfrtrl.datasets", "kfrtrl.threads", "kfrtrl.torch", "kfrtrl.sweep", "kfrtrl.estimators.rtrl", "kfrtrl.estimators.uoro", "kfrtrl.estimators.kf", "kfrtrl.estimators.ok", "kfrtrl.estimators.nobacktrack", "kfrtrl.estimators.tbptt", "kfrtrl.estimators.snap1", "kfrtrl.estimators.rflo", "kfrtrl.cells._base", "kfrtrl.cells.elman", "kfrtrl.cells.gated", "kfrtrl.cells.elementwise", "kfrtrl.cells.stack"]


def _sections(doc):
    return set(re.findall(r"^(\w[\w ]*)\n-{3,}$", doc, re.M))


@pytest.mark.parametrize("cls", ESTIMATORS + CELLS + [kfrtrl.bptt], ids=lambda c: c.__name__)
def test_help_shows_parameters_cost_reference_and_an_example(cls):
    doc = inspect.getdoc(cls)
    assert {"Parameters", "Notes", "References", "Examples"} <= _sections(doc)
    params = doc.split("Parameters\n----------")[1].split("\n\n")[0] if "Parameters" in _sections(doc) else ""
    documented = {name.strip() for line in re.findall(r"^([\w, ]+) :", params, re.M) for name in line.split(",")}
    wanted = [p for p in inspect.signature(cls).parameters if p != "self"]
    assert set(wanted) <= documented, f"undocumented parameters: {set(wanted) - documented}"
    notes = doc.split("Notes\n-----")[1]
    assert re.search(r"\bcost\b", notes, re.I)


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name):
    if name == "kfrtrl.torch":
        pytest.importorskip("torch", reason="torch not installed")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
