"""The SGEMM kernel progression in dev/ (docs/kernel_progression.md).

Every CPU step (dev/gemm_cpu/0*.cpp) builds with the machine's g++ and passes its own check
against a float64 reference at sizes that cut every block and tile ragged; the production
step (07_minitl.py) passes the same check through minitl._C. Every CUDA step
(dev/gemm_cuda/*.cu) compiles with nvcc for sm_80; none runs here, there may be no GPU.
Binaries go to pytest's tmp_path, nothing is written under dev/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[1] / "dev"
CPU_STEPS = sorted((DEV / "gemm_cpu").glob("0*.cpp"))
CUDA_STEPS = sorted((DEV / "gemm_cuda").glob("*.cu"))
FLAGS = ["-O3", "-fopenmp", "-mavx2", "-mfma"]  # as dev/gemm_cpu/run.sh builds them
# M > MC = 144 rows (two ic blocks, the last one not whole micro-panels), N not a multiple of
# NR = 16 or 32, K > KC = 256 (a second k slice accumulates into C).
RAGGED = ["151", "45", "300"]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _compile(src: Path, out: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["g++", *FLAGS, *extra, "-o", str(out), str(src)],
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cpu_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    flags = _cpu_flags()
    if not {"avx2", "fma"} <= flags:
        pytest.skip("steps 05-06 use AVX2 + FMA intrinsics; this CPU lacks them")
    out = tmp_path_factory.mktemp("gemm_cpu")
    builds: list[tuple[str, Path, list[str]]] = [(s.stem, s, []) for s in CPU_STEPS]
    if "avx512f" in flags:  # the 12 x 32 kernel of step 05, through step 06's driver
        builds.append(("06_threads_avx512", DEV / "gemm_cpu" / "06_threads.cpp",
                       ["-mavx512f", "-DUSE_AVX512"]))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = list(pool.map(lambda b: _compile(b[1], out / b[0], b[2]), builds))
    for (name, _, _), r in zip(builds, done):
        assert r.returncode == 0, f"{name} does not build:\n{r.stderr}"
    return {name: out / name for name, _, _ in builds}


def _run(exe: Path, args: list[str], threads: int = 1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run([str(exe), *args], check=False, capture_output=True, text=True,
                          timeout=60, env=env)


def test_every_cpu_step_is_built() -> None:
    assert [s.stem for s in CPU_STEPS] == ["01_naive", "02_loop_order", "03_blocking",
                                           "04_packing", "05_microkernel", "06_threads"]


def test_cpu_steps_pass_their_check_at_ragged_sizes(cpu_binaries: dict[str, Path]) -> None:
    for name, exe in cpu_binaries.items():
        for threads in (1, 2) if name.startswith("06") else (1,):
            r = _run(exe, [*RAGGED, "1"], threads)
            assert r.returncode == 0, f"{name} ({threads} threads): {r.stdout}{r.stderr}"
            fields = [f.strip() for f in r.stdout.split("|")]
            assert fields[1] == " ".join(RAGGED) and fields[7] == "ok", r.stdout
            assert float(fields[3]) > 0 and float(fields[6]) < 1e-5


def test_the_check_catches_a_wrong_product(tmp_path: Path) -> None:
    """A gemm that drops the last k term must fail the harness's check (exit 1)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    src = tmp_path / "wrong.cpp"
    src.write_text(f'#include "{DEV / "gemm_cpu" / "common.h"}"\n'
                   "void gemm(int M, int N, int K, const float* A, const float* B, float* C) {\n"
                   "    for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) {\n"
                   "        float s = 0; for (int p = 0; p + 1 < K; ++p)\n"
                   "            s += A[i * K + p] * B[p * N + j];\n"
                   "        C[i * N + j] = s; } }\n"
                   'int main(int c, char** v) { return run_step("wrong", gemm, c, v); }\n')
    assert _compile(src, tmp_path / "wrong", []).returncode == 0
    r = _run(tmp_path / "wrong", [*RAGGED, "1"])
    assert r.returncode == 1 and "FAILED" in r.stdout


def test_production_step_passes_the_same_check() -> None:
    pytest.importorskip("minitl._C")
    # -B: no __pycache__ under dev/
    r = _run(Path(sys.executable), ["-B", str(DEV / "gemm_cpu" / "07_minitl.py"), *RAGGED, "1"])
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("07_minitl_") for ln in lines) and all(" ok " in ln for ln in lines)


@pytest.mark.parametrize("src", CUDA_STEPS, ids=lambda p: p.stem)
def test_cuda_step_compiles(src: Path, tmp_path: Path) -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found")
    # -Xptxas -O0: a compile check, and it halves the time of the two production steps
    r = subprocess.run(["nvcc", "-arch=sm_80", "-Xptxas", "-O0", "-std=c++17", "-c", "-o",
                        str(tmp_path / f"{src.stem}.o"), str(src)],
                       check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def test_every_cuda_step_is_there() -> None:
    assert [s.stem for s in CUDA_STEPS] == [
        "01_naive", "02_coalesced", "03_shared_tiles", "04_register_blocking", "05_vectorized",
        "06_warp_tiling", "07_tensor_cores", "08_minitl_simt", "09_minitl_tensor_cores"]
