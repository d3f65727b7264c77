"""BatchNorm's C++ passes (csrc/cpu/batchnorm.cpp) against numpy in float64, the op on them
against the op's numpy path (MINITL_KERNELS=reference) and PyTorch, and their refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F
from minitl import backend
from minitl.backend import cpu, cpu_batchnorm

pytestmark = pytest.mark.skipif(cpu.native_module() is None, reason="minitl._C not built")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 9), length=st.integers(1, 70),
       seed=st.integers(0, 999),
       offset=st.sampled_from([0.0, 50.0]))
def test_passes_match_numpy(n: int, c: int, length: int, seed: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, length)) + offset).astype(np.float32)
    g = rng.standard_normal((n, c, length)).astype(np.float32)
    mean_v, a, b, d = (rng.standard_normal(c).astype(np.float32) for _ in range(4))
    mod = cpu.native_module()
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    mean, var = cpu_batchnorm.stats(mod, x)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cpu_batchnorm.affine(mod, x, a, b),
                               x64 * a[:, None] + b[:, None], rtol=1e-5, atol=1e-4)
    m = mean.astype(np.float32)
    sg, sgx = cpu_batchnorm.bwd_sums(mod, g, x, m)
    np.testing.assert_allclose(sg, g64.sum(axis=(0, 2)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sgx, (g64 * (x64 - m[:, None])).sum(axis=(0, 2)),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(cpu_batchnorm.bwd_dx(mod, g, x, m, a, b, d),
                               a[:, None] * g64 + b[:, None] * (x64 - m[:, None]) + d[:, None],
                               rtol=1e-5, atol=1e-4)


def _op(x: np.ndarray, training: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    c = x.shape[1]
    xt = mt.tensor(x, requires_grad=True)
    w = mt.tensor(rng.standard_normal(c).astype(np.float32), requires_grad=True)
    b = mt.tensor(rng.standard_normal(c).astype(np.float32), requires_grad=True)
    rm, rv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)
    y = F.batch_norm(xt, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5)
    (y * mt.tensor(rng.standard_normal(x.shape).astype(np.float32))).sum().backward()
    return y.numpy(), xt.grad.numpy(), w.grad.numpy(), b.grad.numpy(), rm, rv


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(8, 3, 5, 7), (2, 16, 33), (4, 5)])
def test_the_op_on_native_passes_matches_its_numpy_path(
        training: bool, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    x = (np.random.default_rng(0).standard_normal(shape) * 3 + 20).astype(np.float32)
    got = _op(x, training)
    monkeypatch.setenv("MINITL_KERNELS", "reference")
    backend.reset_backends()
    try:
        assert cpu_batchnorm.native(x) is None
        want = _op(x, training)
    finally:
        monkeypatch.delenv("MINITL_KERNELS")
        backend.reset_backends()
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


def test_the_op_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(2).standard_normal((16, 8, 9, 9)) + 5).astype(np.float32)
    y, dx, dw, db, rm, rv = _op(x, True)
    rng = np.random.default_rng(1)
    w = torch.tensor(rng.standard_normal(8).astype(np.float32), requires_grad=True)
    b = torch.tensor(rng.standard_normal(8).astype(np.float32), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    trm, trv = torch.full((8,), 0.5), torch.full((8,), 2.0)
    ty = torch.nn.functional.batch_norm(xt, trm, trv, w, b, training=True, momentum=0.1,
                                        eps=1e-5)
    (ty * torch.tensor(rng.standard_normal(x.shape).astype(np.float32))).sum().backward()
    for a, t in ((y, ty), (dx, xt.grad), (dw, w.grad), (db, b.grad), (rm, trm), (rv, trv)):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=2e-4, atol=2e-4)


def test_refusals_name_the_operand() -> None:
    mod = cpu.native_module()
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="expected float32, got float64 for x"):
        mod.batchnorm_stats(x.astype(np.float64))
    with pytest.raises(ValueError, match="expected x to be 3-D"):
        mod.batchnorm_stats(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"s of shape \(4,\) does not match 3 channels"):
        mod.batchnorm_affine(x, np.ones(4, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"g of shape \(2, 3, 5\) does not match x"):
        mod.batchnorm_bwd_sums(np.ones((2, 3, 5), np.float32), x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="must be C-contiguous"):
        mod.batchnorm_stats(np.ones((2, 4, 3), np.float32).transpose(0, 2, 1))
