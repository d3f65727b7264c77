"""MINITL_KERNELS=reference runs on numpy alone: numba is neither needed nor loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import minitl as mt
import minitl.nn.functional as F
x = mt.randn(4, 8, requires_grad=True)
y = F.gelu(F.layer_norm(x, (8,))).softmax(-1)
loss = F.cross_entropy(y, mt.tensor([0, 1, 2, 3])) + F.gelu(x, approximate="tanh").sum()
loss = loss + mt.nn.Conv2d(2, 3, 3)(mt.randn(1, 2, 5, 5)).sum()
loss = loss + mt.nn.Embedding(10, 4)(mt.tensor([[1, 2]])).sum() + x.erf().sum()
loss.backward()
opt = mt.optim.AdamW([x], lr=0.1)
opt.step()
print("numba loaded:", "numba" in sys.modules)
"""


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINITL_KERNELS": "reference", **env_extra}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_reference_mode_does_not_load_numba() -> None:
    out = _run({})
    assert out.returncode == 0, out.stderr
    assert "numba loaded: False" in out.stdout


def test_reference_mode_runs_with_numba_unimportable(tmp_path: Path) -> None:
    (tmp_path / "numba.py").write_text('raise ImportError("numba blocked")\n')
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    out = _run({"PYTHONPATH": path})
    assert out.returncode == 0, out.stderr
