"""QuantLinear / QuantEmbedding: every block type against the float layer it stands for, on the
reference kernels and on the native ones; input and bias gradients, no weight gradient; bad
blocks, shapes and ids named."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from helpers import gradcheck

import minitl as mt
from minitl import backend, nn
from minitl.io.gguf_quants import dequantize, quantize
from minitl.ops.quant import quant_linear

TYPES = ["Q4_0", "Q4_1", "Q8_0", "F16", "F32"]
RNG = np.random.default_rng(0)


@pytest.fixture(params=["reference", "auto"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MINITL_KERNELS", request.param)
    backend.reset_backends()
    yield request.param
    backend.reset_backends()


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("n", [1, 3, 37])
def test_forward_and_input_gradient(kernels: str, qtype: str, n: int) -> None:
    w = RNG.standard_normal((45, 96)).astype(np.float32)
    bias = RNG.standard_normal(45).astype(np.float32)
    q = quantize(w, qtype)
    wd = dequantize(q, qtype, w.shape)
    layer = nn.QuantLinear(q, qtype, bias)
    x = mt.tensor(RNG.standard_normal((n, 2, 96)).astype(np.float32), requires_grad=True)
    y = layer(x)
    want = x.numpy() @ wd.T + bias
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-4, atol=1e-4)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    (y * mt.tensor(g)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), g @ wd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.bias.grad.numpy(), g.reshape(-1, 45).sum(0), rtol=1e-4,
                               atol=1e-4)
    assert [n for n, _ in layer.named_parameters()] == ["bias"]
    assert layer.qweight.dtype == np.uint8 and not layer.qweight.requires_grad


def test_gradcheck_float64() -> None:
    q = quantize(RNG.standard_normal((5, 32)), "Q4_1")
    gradcheck(lambda x, b: quant_linear(x, q, 3, b), [RNG.standard_normal((3, 32)),
                                                      RNG.standard_normal(5)])


def test_from_linear_and_dequantize() -> None:
    lin = nn.Linear(64, 10)
    layer = nn.QuantLinear.from_linear(lin, "Q8_0")
    w = lin.weight.numpy()
    assert np.abs(layer.dequantize() - w).max() <= np.abs(w).max() / 127
    np.testing.assert_array_equal(layer.bias.numpy(), lin.bias.numpy())
    assert "qtype=Q8_0" in repr(layer) and layer.in_features == 64 and layer.out_features == 10


def test_embedding_rows_and_bad_ids(kernels: str) -> None:
    table = RNG.standard_normal((20, 64)).astype(np.float32)
    q = quantize(table, "Q4_1")
    emb = nn.QuantEmbedding(q, "Q4_1")
    ids = np.array([[3, 0, 19], [3, 3, 7]])
    np.testing.assert_array_equal(emb(mt.tensor(ids)).numpy(),
                                  dequantize(q, "Q4_1", table.shape)[ids])
    with pytest.raises(IndexError, match="index 20"):
        emb(mt.tensor([[1, 20]]))
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([1.5]))


def test_bad_blocks_and_shapes() -> None:
    q = quantize(RNG.standard_normal((4, 64)), "Q4_0")
    with pytest.raises(ValueError, match="uint8"):
        nn.QuantLinear(q[:, :-1], "Q4_0")
    with pytest.raises(ValueError, match="not a type quantized layers take"):
        nn.QuantLinear(np.zeros((4, 210), np.uint8), "Q6_K")
    with pytest.raises(ValueError, match="unknown ggml tensor type"):
        nn.QuantLinear(q, 99)
    with pytest.raises(ValueError, match="bias"):
        nn.QuantLinear(q, "Q4_0", np.zeros(3))
    layer = nn.QuantLinear(q, "Q4_0")
    with pytest.raises(ValueError, match="64 input features"):
        layer(mt.zeros(2, 32))
    with pytest.raises(TypeError, match="floating point"):
        layer(mt.tensor(np.zeros((2, 64), np.int64)))
