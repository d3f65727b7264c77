"""Every kernel template the CUDA wrappers may launch (cuda_tune.all_instantiations) is
explicitly instantiated in its .cu file. A missing one would compile and pass CI's nvcc
check, then fail at run time on a GPU with a name lookup error; the preprocessor alone
(`nvcc -E`, no GPU, about a second a file) shows what the instantiation macros expand to."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minitl.backend import cuda_tune

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = cuda_tune.all_instantiations()
INSTANTIATED = re.compile(r"template\s+__attribute__\(\(global\)\)\s+void\s+(\w+<[^>]*>)")


def _normalise(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_every_launched_template_is_instantiated(source: str) -> None:
    out = subprocess.run(["nvcc", "-E", "-x", "cu", "-std=c++17", "-arch=sm_90a",
                          f"-I{ROOT / 'csrc'}", str(ROOT / "csrc" / "cuda" / source)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    have = {_normalise(m) for m in INSTANTIATED.findall(out)}
    assert have, f"no explicit instantiations found in {source}"
    missing = [e for e in EXPECTED[source] if _normalise(e) not in have]
    assert not missing, f"{source} lacks explicit instantiations of {missing}"
