"""`mt.threads.blas_threads`: numpy's OpenBLAS pool held at n threads inside a block."""

from __future__ import annotations

import numpy as np
import pytest

import minitl as mt


def test_blas_threads_sets_and_restores_numpys_pool() -> None:
    before = mt.threads.get_blas_threads()
    if before is None:
        pytest.skip("numpy's BLAS here is not an OpenBLAS minitl knows")
    with mt.threads.blas_threads(1) as previous:
        assert previous == before and mt.threads.get_blas_threads() == 1
        a = np.ones((64, 64))
        np.testing.assert_allclose(a @ a, 64.0)  # products still right at one thread
    assert mt.threads.get_blas_threads() == before
    with pytest.raises(RuntimeError), mt.threads.blas_threads(1):
        raise RuntimeError("restored on the way out as well")
    assert mt.threads.get_blas_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_blas_threads_refuses_nonsense(bad: object) -> None:
    with pytest.raises(ValueError, match="positive integer"), mt.threads.blas_threads(bad):
        pass
