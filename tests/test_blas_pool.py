"""numpy's OpenBLAS running its parallel jobs on minitl's OpenMP team
(`minitl.threads.share_blas_pool`, csrc/cpu/blas_pool.cpp): same products, the callback really
called, its fallback threads in a forked child and under concurrent callers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import minitl as mt
from minitl.backend import cpu

native = cpu.native_module()
pytestmark = pytest.mark.skipif(native is None, reason="minitl._C is not built")


def _shareable() -> bool:
    was = mt.threads.blas_pool_shared()
    ok = mt.threads.share_blas_pool(True)
    mt.threads.share_blas_pool(was)
    return ok


needs_callback = pytest.mark.skipif(
    native is None or not _shareable(),
    reason="numpy's BLAS is not an OpenBLAS with the threads callback (0.3.27+)")


@pytest.fixture
def shared_pool():
    was = mt.threads.blas_pool_shared()
    assert mt.threads.share_blas_pool(True)
    yield
    mt.threads.share_blas_pool(was)


def _operands(n: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    return (rng.standard_normal((n, n + 3)).astype(dtype),
            rng.standard_normal((n + 3, n - 1)).astype(dtype))


@needs_callback
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [96, 300, 700])
def test_products_equal_openblas_own_threads(shared_pool, n: int, dtype: type) -> None:
    a, b = _operands(n, dtype)
    calls_before = native.blas_job_counts()[0]
    shared = a @ b
    if n >= 300:  # large enough for OpenBLAS to split the work: the callback ran it
        assert native.blas_job_counts()[0] > calls_before
    mt.threads.share_blas_pool(False)
    calls_before = native.blas_job_counts()[0]
    own = a @ b
    assert native.blas_job_counts()[0] == calls_before  # handed back: not called any more
    # The same jobs with the same partition, only other threads: bit for bit.
    np.testing.assert_array_equal(shared, own)


@needs_callback
def test_concurrent_callers_get_their_own_products(shared_pool) -> None:
    pairs = [_operands(400 + 7 * i, np.float32) for i in range(6)]
    want = [a.astype(np.float64) @ b.astype(np.float64) for a, b in pairs]
    got: list[np.ndarray | None] = [None] * len(pairs)

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = pairs[i][0] @ pairs[i][1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        assert g is not None
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3)


@needs_callback
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_jobs_on_its_own_threads() -> None:
    # In a child process: the OpenMP team of a forked process is not there, so the callback
    # must start threads of its own instead of waiting on the parent's (a hang).
    script = textwrap.dedent("""
        import os, sys
        import numpy as np
        from minitl.backend import cpu
        from minitl import threads
        native = cpu.native_module()
        assert threads.blas_pool_shared()
        a = np.random.default_rng(0).standard_normal((600, 600)).astype(np.float32)
        want = a @ a                       # parent: on the OpenMP team
        native.gemm(a, a, False, False)    # the team exists now
        pid = os.fork()
        if pid == 0:
            before = native.blas_job_counts()[1]
            ok = np.array_equal(a @ a, want) and native.blas_job_counts()[1] > before
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_environment_switch() -> None:
    script = ("from minitl.backend import cpu; from minitl import threads; "
              "cpu.native_module(); print(threads.blas_pool_shared())")
    off = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "MINITL_SHARE_BLAS_POOL": "0"}, timeout=120)
    assert off.returncode == 0 and off.stdout.strip() == "False", off.stderr
    bad = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "MINITL_SHARE_BLAS_POOL": "yes"}, timeout=120)
    assert bad.returncode != 0 and "MINITL_SHARE_BLAS_POOL must be 0" in bad.stderr
