"""Builds minitl's native CPU extension, minitl._C, from csrc/ with pybind11.

Every csrc/cpu/*.cpp and csrc/bindings*.cpp is compiled into the one module, so a new kernel
file needs no change here. Flags: -O3 -fno-trapping-math, C++17, OpenMP. Never -march=native:
the binary must run on any x86-64, so wider SIMD paths are chosen at run time inside the kernels
(csrc/cpu/isa.h; MINITL_CPU_ISA caps them).

Build in place for development:  python setup.py build_ext --inplace
"""

import shutil
import sys
from glob import glob
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# Apple's clang has no -fopenmp; the kernels then run on one thread (see csrc/cpu/common.h).
OPENMP = [] if sys.platform == "darwin" else ["-fopenmp"]


class BuildExt(build_ext):
    """build_ext that also drops the built module into the source tree.

    `pip install .` followed by `python -m pytest` in the checkout imports minitl from the
    checkout (the current directory comes first on sys.path), not from site-packages; the copy
    lets that import find minitl._C too, as `build_ext --inplace` would.
    """

    def run(self) -> None:
        super().run()
        if self.inplace:
            return
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            target = ROOT / self.get_ext_filename(ext.name)
            if not target.parent.is_dir():
                continue
            try:
                shutil.copyfile(built, target)
            except OSError as err:  # a read-only checkout still installs
                print(f"note: could not copy {built.name} into {target.parent}: {err}")


class BuildPy(build_py):
    """build_py that also ships csrc/cuda (*.cu, *.cuh) as minitl/cuda_kernels: CuPy compiles
    those sources at run time, so the installed package must carry them; and the `minitl
    bench` subjects (benchmarks/bench_*.py and their common.py) as minitl/_benchmarks, so the
    command runs from an installed minitl as from a checkout."""

    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "minitl" / "cuda_kernels"
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted(glob("csrc/cuda/*.cu") + glob("csrc/cuda/*.cuh")):
            self.copy_file(src, str(dest / Path(src).name))
        bench = Path(self.build_lib) / "minitl" / "_benchmarks"
        bench.mkdir(parents=True, exist_ok=True)
        for src in sorted(glob("benchmarks/bench_*.py") + ["benchmarks/__init__.py",
                                                           "benchmarks/common.py"]):
            self.copy_file(src, str(bench / Path(src).name))


ext_modules = [
    Pybind11Extension(
        "minitl._C",
        sources=[*sorted(glob("csrc/bindings*.cpp")), *sorted(glob("csrc/cpu/*.cpp"))],
        include_dirs=["csrc"],
        depends=sorted(glob("csrc/**/*.h", recursive=True)),
        cxx_std=17,
        # -fno-trapping-math: minitl never reads the floating-point exception flags, and
        # without it GCC will not if-convert a select such as `t > lo ? p * s : 0` on AVX2 or
        # SSE (only AVX-512's masked operations get past it), leaving those loops scalar
        extra_compile_args=["-O3", "-fno-trapping-math", *OPENMP],
        extra_link_args=OPENMP,
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
