"""The API documentation: help() of every estimator and cell shows its parameters, cost and reference,
every public function, class and method of the modules in API_MODULES (training, tasks, diagnostics,
scaling, backends, sweeps, data, threads, the command, the estimators, the torch bridge) documents each
of its parameters, and the examples in the docstrings run."""
import doctest
import importlib
import importlib.util
import inspect
import re

import pytest

import kfrtrl
from kfrtrl import cells, estimators

ESTIMATORS = [cls for cls in vars(estimators).values() if inspect.isclass(cls) and cls.__module__.startswith("kfrtrl")
              and getattr(cls, "name", None)]
CELLS = [cls for cls in vars(cells).values() if inspect.isclass(cls) and issubclass(cls, cells.Cell) and cls is not cells.Cell]
DOCTESTED = ["kfrtrl.datasets", "kfrtrl.threads", "kfrtrl.torch", "kfrtrl.sweep", "kfrtrl.estimators.rtrl", "kfrtrl.estimators.uoro", "kfrtrl.estimators.kf", "kfrtrl.estimators.ok", "kfrtrl.estimators.nobacktrack", "kfrtrl.estimators.tbptt", "kfrtrl.estimators.snap1", "kfrtrl.estimators.rflo", "kfrtrl.cells._base", "kfrtrl.cells.elman", "kfrtrl.cells.gated", "kfrtrl.cells.elementwise", "kfrtrl.cells.stack"]


API_MODULES = ["kfrtrl.train", "kfrtrl.tasks", "kfrtrl.diagnostics", "kfrtrl.scaling", "kfrtrl.backends",
               "kfrtrl.sweep", "kfrtrl.datasets", "kfrtrl.threads", "kfrtrl.cli", "kfrtrl.estimators",
               "kfrtrl.estimators.ok", "kfrtrl.estimators.rflo", "kfrtrl.series", "kfrtrl.synthetic",
               "kfrtrl.checkpoint", "kfrtrl.longrun", "kfrtrl.plotting", "kfrtrl.cells", "kfrtrl.cells.stack",
               "kfrtrl.cells.elementwise", "kfrtrl.papers", "kfrtrl.workloads", "kfrtrl.optim",
               "kfrtrl.experiments"]
API_MODULES += ["kfrtrl.torch"] if importlib.util.find_spec("torch") else []     # the optional bridge


def _sections(doc):
    return set(re.findall(r"^(\w[\w ]*)\n-{3,}$", doc, re.M))


def _documented(doc):
    """The names a numpydoc Parameters section documents: its unindented ``a, b : type`` or ``**kwargs`` lines."""
    section = re.search(r"^Parameters\n-{3,}\n(.*?)(?=^\w[\w ]*\n-{3,}$|\Z)", doc, re.S | re.M)
    names = set()
    for line in section.group(1).splitlines() if section else []:
        entry = re.match(r"(\*{0,2}\w+(?:, \*{0,2}\w+)*)(?: :|$)", line)
        names |= {name.lstrip("*") for name in entry.group(1).split(", ")} if entry else set()
    return names


def _undocumented(obj):
    """The parameters of ``obj`` (a function, or a class's constructor) its docstring does not document."""
    wanted = [p for p in inspect.signature(obj).parameters if p != "self"]
    return set(wanted) - _documented(inspect.getdoc(obj) or "")


def _public_callables(name):
    """(qualified name, object) of every public function and class of module ``name`` (its __all__, else
    what it defines itself) and of the public methods those classes define."""
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None) or [k for k, v in vars(module).items() if not k.startswith("_")
                                                 and getattr(v, "__module__", None) == name]
    out = []
    for attr in names:
        obj = getattr(module, attr)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            out.append((f"{name}.{attr}", obj))
        if inspect.isclass(obj):
            out += [(f"{name}.{attr}.{k}", v) for k, v in vars(obj).items()
                    if not k.startswith("_") and inspect.isfunction(v)]
    return out


API = [item for module in API_MODULES for item in _public_callables(module)]


@pytest.mark.parametrize("cls", ESTIMATORS + CELLS + [kfrtrl.bptt], ids=lambda c: c.__name__)
def test_help_shows_parameters_cost_reference_and_an_example(cls):
    doc = inspect.getdoc(cls)
    assert {"Parameters", "Notes", "References", "Examples"} <= _sections(doc)
    assert not _undocumented(cls), f"undocumented parameters: {_undocumented(cls)}"
    notes = doc.split("Notes\n-----")[1]
    assert re.search(r"\bcost\b", notes, re.I)


@pytest.mark.parametrize("name, obj", API, ids=[name for name, _ in API])
def test_every_public_callable_documents_each_parameter(name, obj):
    assert not _undocumented(obj), f"{name}: undocumented parameters {sorted(_undocumented(obj))}"


def test_the_parameter_check_finds_a_missing_entry():
    def f(a, b, *args, c=1, **kwargs):
        """Parameters
        ----------
        a, c : int
            Text that mentions b : not an entry.
        *args
        **kwargs

        Returns
        -------
        b : not a parameter entry either
        """

    assert _undocumented(f) == {"b"}
    assert len(API) > 60 and "kfrtrl.train.Trainer.step" in dict(API)


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name):
    if name == "kfrtrl.torch":
        pytest.importorskip("torch", reason="torch not installed")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
