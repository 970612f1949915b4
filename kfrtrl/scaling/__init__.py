"""Scaling measurements: time and memory per step of every estimator against n.

One pipeline shared by ``bench/test_scaling.py`` (pytest-benchmark) and the
``kfrtrl bench`` command (:func:`kfrtrl.experiments.bench`): measuring in
:mod:`.measure` (workloads, GEMM lower bound), timing in :mod:`.timing` (timed
calls, size budget), reporting in :mod:`.report` (JSON, fits, table); the plot
is :func:`kfrtrl.plotting.scaling`.
Estimators are named as everywhere in kfrtrl (:func:`kfrtrl.train.parse_spec`),
cells as ``elman``, ``rhn`` (``rhnL``: depth L), ``lstm``, ``gru``, ``elstm``, ``lru``.
"""
from .measure import (CELLS, DEFAULT_CELLS, DEFAULT_ESTIMATORS, N_IN, SIZES, Workload, canonical, canonical_cell,
                      gemm_flops, gemm_layers, grid, make_cell, measure, parse_cell, run, tangents)
from .report import (SUITE, by_fields, exponent_text, fit_exponent, fits, format_bytes, format_table, format_time,
                     load_records, to_json, upper_half)
from .timing import MAX_STATE_BYTES, MAX_STEP_SECONDS, Budget, calls_per_round, time_per_call

__all__ = [
    "CELLS", "DEFAULT_CELLS", "DEFAULT_ESTIMATORS", "MAX_STATE_BYTES", "MAX_STEP_SECONDS", "N_IN", "SIZES", "SUITE",
    "Budget", "Workload", "by_fields", "calls_per_round", "canonical", "canonical_cell", "exponent_text",
    "fit_exponent", "fits", "format_bytes", "format_table", "format_time", "gemm_flops", "gemm_layers", "grid",
    "load_records", "make_cell", "measure", "parse_cell", "run", "tangents", "time_per_call", "to_json", "upper_half",
]
