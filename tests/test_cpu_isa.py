"""MINITL_CPU_ISA caps the SIMD instruction set of every native CPU kernel, so one machine can
run (and test) the AVX2 and baseline paths an older CPU would take; each capped run must give
the reference's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minitl.backend import cpu

pytestmark = pytest.mark.skipif(cpu.native_module() is None, reason="minitl._C not built")

# Runs in a fresh interpreter: the extension reads the cap once, on its first use.
PROBE = r"""
import json
import numpy as np
from minitl.backend import cpu, reference
rng = np.random.default_rng(0)
x = (4 * rng.standard_normal((5, 131))).astype(np.float32)
g = rng.standard_normal((5, 131)).astype(np.float32)
a = rng.standard_normal((37, 70), dtype=np.float32)
b = rng.standard_normal((70, 45), dtype=np.float32)
C = cpu.native_module()
x64, g64 = x.astype(np.float64), g.astype(np.float64)
from minitl.backend import cpu_rowwise
s = (3 * rng.standard_normal((9, 77))).astype(np.float32)
lw, lb = rng.standard_normal(77).astype(np.float32), rng.standard_normal(77).astype(np.float32)
y_ln = cpu_rowwise.layernorm_fwd(s, lw, lb, 1e-5)[0]
err = {
    "softmax_fwd": float(np.abs(cpu_rowwise.softmax_fwd(s, True)
                                - reference.softmax_fwd(s.astype(np.float64), True)).max()),
    "layernorm_fwd": float(np.abs(y_ln - reference.layernorm_fwd(s.astype(np.float64), lw, lb,
                                                                  1e-5)[0]).max()),
    "gelu_fwd": float(np.abs(C.gelu_fwd(x, True) - reference.gelu_fwd(x64, "none")).max()),
    "gelu_bwd": float(np.abs(C.gelu_bwd(g, x, False) - reference.gelu_bwd(g64, x64, "tanh")).max()),
    "gemm": float(np.abs(C.gemm(a, b, False, False) - a.astype(np.float64) @ b).max()),
}
print(json.dumps({"features": cpu.cpu_features(), "err": err}))
"""


def probe(isa: str) -> dict:
    env = {**os.environ, "MINITL_CPU_ISA": isa}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_each_cap_runs_its_path_and_agrees_with_the_reference(isa: str) -> None:
    got = probe(isa)
    rank = {"generic": 0, "avx2": 1, "avx512": 2}
    best = cpu.cpu_features()["isa"]  # this CPU's widest (the suite runs uncapped)
    want = isa if rank[isa] <= rank[best] else best  # a cap never widens past the CPU
    assert got["features"]["isa"] == want
    assert got["features"]["gemm_path"].startswith({"generic": "generic", "avx2": "avx2",
                                                     "avx512": "avx512"}[want])
    assert got["err"]["gelu_fwd"] < 1e-5 and got["err"]["gelu_bwd"] < 1e-5
    assert got["err"]["gemm"] < 1e-3
    assert got["err"]["softmax_fwd"] < 1e-6 and got["err"]["layernorm_fwd"] < 1e-4


def test_an_unknown_cap_is_refused_by_name() -> None:
    env = {**os.environ, "MINITL_CPU_ISA": "avx1024"}
    out = subprocess.run([sys.executable, "-c", "import minitl.backend.cpu as c; c.gemm"
                          "(__import__('numpy').ones((2, 2), 'f'), __import__('numpy')"
                          ".ones((2, 2), 'f'))"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "MINITL_CPU_ISA must be one of auto, avx512, avx2, generic" in out.stderr
    assert "'avx1024'" in out.stderr
