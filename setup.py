"""Build the Cython/OpenMP kernels: ``kernels/<name>.pyx`` -> ``kfrtrl._cy.<name>``.

Metadata lives in pyproject.toml; this file only declares the extensions.
OpenMP is probed at build time by compiling and linking a tiny C program
with ``-fopenmp``; without it, or with ``KFRTRL_NO_OPENMP=1``, the same
sources build serially (Cython's ``prange`` then runs as a plain loop).
BLAS/LAPACK come from ``scipy.linalg.cython_blas``/``cython_lapack`` at run
time: nothing is linked. ``KFRTRL_NATIVE=1`` adds ``-march=native`` (faster,
not portable; off by default).
"""
import glob
import os
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
OPENMP_FLAG = "-fopenmp"
PROBE = """#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def _env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0")


def _openmp_works(compiler):
    """True if ``compiler`` compiles and links an OpenMP program with -fopenmp."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(PROBE)
        try:
            objs = compiler.compile([str(src)], output_dir=tmp, extra_postargs=[OPENMP_FLAG])
            compiler.link_executable(objs, str(Path(tmp, "probe")), extra_postargs=[OPENMP_FLAG])
        except Exception:  # CompileError, LinkError, or a missing compiler executable
            return False
    return True


class BuildExt(build_ext):
    """build_ext that decides OpenMP (probe or KFRTRL_NO_OPENMP=1) and says which in one line."""

    def build_extensions(self):
        if _env_flag("KFRTRL_NO_OPENMP"):
            use, why = False, "KFRTRL_NO_OPENMP=1"
        else:
            use = _openmp_works(self.compiler)
            why = "-fopenmp works" if use else "the compiler cannot build an OpenMP program"
        print(f"kfrtrl: building the Cython kernels {'with OpenMP' if use else 'serial (no OpenMP)'} ({why})")
        for ext in self.extensions:
            if use:
                ext.extra_compile_args.append(OPENMP_FLAG)
                ext.extra_link_args.append(OPENMP_FLAG)
        super().build_extensions()


def _extensions():
    compile_args = ["-O3"] + (["-march=native"] if _env_flag("KFRTRL_NATIVE") else [])
    exts = [
        Extension(
            f"kfrtrl._cy.{Path(src).stem}",
            [src],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=list(compile_args),
            depends=sorted(glob.glob("kernels/*.pxd") + glob.glob("kernels/*.h")),
        )
        for src in sorted(glob.glob("kernels/*.pyx"))
    ]
    return cythonize(exts, include_path=["kernels"], language_level=3)


os.chdir(HERE)
setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
