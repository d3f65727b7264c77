"""minitl.distributed with 2 MPI ranks: collectives, DDP parity, faults (about 40 s in all).

Each test starts `mpiexec -n N python tests/distributed_worker.py MODE ...` (see that file);
all skip, saying why, without mpi4py or an mpiexec.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minitl.distributed.launch import find_mpiexec, mpiexec_command

WORKER = Path(__file__).with_name("distributed_worker.py")
MPIEXEC = find_mpiexec()

needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="multi-rank tests need mpi4py and mpiexec: pip install 'minitl[distributed]'")


def ranks(n: int, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MINITL_NUM_THREADS": "1"}
    cmd = mpiexec_command(n, [str(WORKER), *args])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False, cwd=WORKER.parent.parent)


@needs_mpi
def test_collectives_and_sampler_on_two_ranks() -> None:
    out = ranks(2, "collectives")
    assert out.returncode == 0, out.stderr
    assert "collectives ok 2" in out.stdout


# Parameters whose gradient is zero in exact arithmetic: a key bias adds the same q.b_k to
# every score of a softmax row. They start at 0 and stay at rounding-noise level, so a
# relative comparison means nothing; they are held to an absolute bound instead.
ZERO_GRAD = ("attention.self.key.bias",)


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    for n in (1, 2):
        out = ranks(n, "parity", str(tmp / f"{n}.npz"))
        assert out.returncode == 0, out.stderr
    return dict(np.load(tmp / "1.npz")), dict(np.load(tmp / "2.npz"))


@needs_mpi
@pytest.mark.parametrize("run, loss_tol, weight_tol", [
    ("bert", 1e-6, 1e-5), ("bert-accum", 1e-6, 1e-5), ("bert-f64", 1e-12, 1e-12),
    ("resnet-f64", 1e-12, 1e-12)])
def test_two_ranks_half_batch_reproduce_one_rank_full_batch(
        parity_runs: tuple[dict, dict], run: str, loss_tol: float, weight_tol: float) -> None:
    """20 AdamW steps: 2 ranks x B/2 against 1 rank x B. Measured (float32): losses within
    1.2e-7 relative, every weight tensor within 1.2e-6 (relative norm of the difference);
    float64: 1e-15 (resnet-f64 on a Zen 5: 3.8e-16 and 8.0e-16). The tolerances leave room
    for other summation orders, not for bugs."""
    one, two = parity_runs
    la, lb = one[f"{run}/losses"], two[f"{run}/losses"]
    assert len(la) == 20
    np.testing.assert_allclose(lb, la, rtol=loss_tol, atol=0)
    for key in one:
        if not key.startswith(run + "/") or key.endswith("/losses"):
            continue
        a, b = one[key], two[key]
        if key.endswith(ZERO_GRAD):
            assert np.max(np.abs(a - b)) < 1e-4, key
            continue
        rel = np.linalg.norm(a - b) / np.linalg.norm(a)
        assert rel <= weight_tol, (key, rel)


@needs_mpi
@pytest.mark.parametrize("mode, says", [
    ("fault-raise", "rank 1 of 2 stopped on ValueError"),
    ("fault-exit", ""),
    ("fault-hang", "did not complete within 3 s"),
    ("mismatch", "the ranks hold different models"),
])
def test_a_failing_rank_ends_the_job_with_a_message(mode: str, says: str) -> None:
    t0 = time.perf_counter()
    out = ranks(2, mode, timeout=60)
    assert out.returncode != 0
    assert "passed a collective it should not have" not in out.stdout
    assert "models accepted" not in out.stdout
    assert says in out.stderr, out.stderr[-2000:]
    assert time.perf_counter() - t0 < 30


def test_the_package_imports_without_mpi4py() -> None:
    code = ("import sys; sys.modules['mpi4py'] = None; import minitl, minitl.distributed as d; "
            "assert not d.is_initialized()\n"
            "try:\n    d.init_process_group('mpi')\nexcept ImportError as e:\n"
            "    print('refused:', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "pip install 'minitl[distributed]'" in out.stdout


@needs_mpi
def test_pretrain_nproc_2_writes_once_and_resumes_exactly(tmp_path: Path) -> None:
    """`minitl pretrain --nproc 2`: rank 0 alone prints and writes; a run resumed from its
    step-2 checkpoint ends on the same weights as the uninterrupted one."""
    flags = ["-m", "minitl.cli", "pretrain", "--model", "bert-tiny", "--steps", "4",
             "--eval-every", "2", "--eval-batches", "2", "--train-limit", "20000",
             "--batch-size", "4", "--nproc", "2", "--checkpoint-every", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, *flags, "--out", "a.safetensors"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env=env, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("trained 4 steps") == 1
    ckpt = tmp_path / "a.checkpoints" / "checkpoint-0000002.safetensors"
    again = subprocess.run([sys.executable, *flags, "--out", "b.safetensors", "--resume",
                            str(ckpt)], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env=env, check=False)
    assert again.returncode == 0, again.stderr
    import minitl as mt

    a, b = mt.load(tmp_path / "a.safetensors"), mt.load(tmp_path / "b.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
