"""`minitl finetune --nproc 2`: the encoder recipe on two MPI ranks lands where one process
lands (the ranks' half-batch gradients averaged are the whole batch's), and rank 0 alone
writes. Skips without mpi4py and mpiexec."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_recipes import tiny_assets

import minitl as mt
from minitl.cli import main
from minitl.distributed.launch import find_mpiexec

needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None,
    reason="multi-rank tests need mpi4py and mpiexec: pip install 'minitl[distributed]'")


def _flags(tiny: dict[str, str], out: Path, strategy: str) -> list[str]:
    return ["finetune", "--backbone", tiny["backbone"], "--data", "movie-reviews",
            "--data-root", tiny["data"], "--source-text", tiny["source"], "--source-lines",
            "20", "--strategy", strategy, "--labels", "48", "--eval-size", "24",
            "--max-steps", "6", "--no-select", "--quiet", "--out", str(out)]


@needs_mpi
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_two_ranks_reproduce_one_process(strategy: str, tmp_path: Path) -> None:
    tiny = tiny_assets(tmp_path / "assets")
    # no dropout: a rank draws its masks for half a batch, so with dropout the two runs
    # would differ by design, not by arithmetic
    config = Path(tiny["backbone"]) / "config.json"
    cfg = json.loads(config.read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config.write_text(json.dumps(cfg))
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_flags(tiny, one, strategy)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "minitl.cli", *_flags(tiny, two, strategy),
                          "--nproc", "2"], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("finetune: ") == 1, run.stdout  # rank 0 alone speaks
    name = "model.safetensors" if strategy == "full" else "adapter_model.safetensors"
    a, b = mt.load(one / name), mt.load(two / name)
    assert a.keys() == b.keys()
    for k in a:  # float32 sums in another order: equal to 1e-4 relative after 6 AdamW steps
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=k)
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m1["steps"] == m2["steps"] == 6


def test_nproc_refuses_strategies_that_do_not_train_the_encoder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = tiny_assets(tmp_path / "assets")
    assert main([*_flags(tiny, tmp_path / "o", "head"), "--nproc", "2"]) == 2
    assert "--nproc trains the encoder data-parallel" in capsys.readouterr().err
