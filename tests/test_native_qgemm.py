"""csrc/cpu/qgemm.cpp against its numpy reference: every path this CPU runs (generic, avx2,
avx512), every block type, sizes that cut the dot-product kernel's row groups and the GEMM's
tiles; lookups bit for bit; the bindings' argument checks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from minitl.backend import reference
from minitl.io.gguf_quants import quantize

_C = pytest.importorskip("minitl._C")
TYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 8}


def _paths() -> list[str]:
    f = _C.cpu_features()
    return ["generic"] + (["avx2"] if f["avx2"] and f["fma"] else []) + \
        (["avx512"] if f["avx512f"] else [])


@pytest.fixture(params=_paths())
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    _C.set_quant_path(request.param)
    yield request.param
    _C.set_quant_path("auto")


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("m,n,k", [(1, 7, 32), (2, 45, 96), (3, 65, 64), (4, 33, 160),
                                   (5, 45, 96), (37, 129, 320), (130, 50, 416)])
def test_matches_the_reference(path: str, qtype: str, m: int, n: int, k: int) -> None:
    rng = np.random.default_rng(m * 1000 + n)
    q = quantize(rng.standard_normal((n, k)) * rng.uniform(0.1, 3, (n, 1)), qtype)
    t = TYPES[qtype]
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for b in (bias, None):
        np.testing.assert_allclose(_C.quant_linear_fwd(x, q, t, b),
                                   reference.quant_linear_fwd(x, q, t, b), rtol=1e-4, atol=1e-4)
    g = rng.standard_normal((m, n)).astype(np.float32)
    np.testing.assert_allclose(_C.quant_linear_bwd(g, q, t), reference.quant_linear_bwd(g, q, t),
                               rtol=1e-4, atol=1e-4)
    ids = rng.integers(0, n, 2 * m)
    np.testing.assert_array_equal(_C.dequantize_rows(q, t, ids),
                                  reference.dequantize_rows(q, t, ids))


def test_special_scales_propagate(path: str) -> None:
    """Subnormal, infinite and NaN half scales are dequantized as the reference does."""
    q = quantize(np.ones((4, 32)), "Q8_0")
    q[:, :2] = np.array([0x0001, 0x03FF, 0x7C00, 0x7E00], "<u2").view(np.uint8).reshape(4, 2)
    got = _C.dequantize_rows(q, 8, np.arange(4))
    np.testing.assert_array_equal(got, reference.dequantize_rows(q, 8, np.arange(4)))
    assert np.isinf(got[2]).all() and np.isnan(got[3]).all() and 0 < got[0, 0] < 1e-4


def test_argument_checks() -> None:
    q = quantize(np.ones((3, 64)), "Q4_1")
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="ggml type 14"):
        _C.quant_linear_fwd(x, q, 14, None)
    with pytest.raises(ValueError, match="uint8"):
        _C.quant_linear_fwd(x, q.astype(np.int16), 3, None)
    with pytest.raises(ValueError, match="must be \\(rows, k \\* 20\\)"):
        _C.quant_linear_fwd(x, q[:, :30].copy(), 3, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.quant_linear_fwd(x, np.asfortranarray(q), 3, None)
    with pytest.raises(ValueError, match="shapes do not fit"):
        _C.quant_linear_fwd(np.ones((2, 32), np.float32), q, 3, None)
    with pytest.raises(ValueError, match="shapes do not fit"):
        _C.quant_linear_fwd(x, q, 3, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="float32"):
        _C.quant_linear_fwd(x.astype(np.float64), q, 3, None)
    with pytest.raises(ValueError, match="shapes do not fit"):
        _C.quant_linear_bwd(np.ones((2, 4), np.float32), q, 3)
    with pytest.raises(IndexError, match="index 3 at position 1"):
        _C.dequantize_rows(q, 3, np.array([0, 3]))
    with pytest.raises(IndexError, match="index -1"):
        _C.dequantize_rows(q, 3, np.array([-1]))
    with pytest.raises(ValueError, match="int64"):
        _C.dequantize_rows(q, 3, np.array([0], np.int32))
    with pytest.raises(ValueError, match="unknown or unsupported path"):
        _C.set_quant_path("neon")
    assert _C.cpu_features()["quant_path"] in ("generic", "avx2", "avx512")


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("m", [1, 3, 24, 25, 130])
def test_qlora_layer_matches_the_reference(path: str, qtype: str, m: int) -> None:
    rng = np.random.default_rng(m)
    n, k, r = 70, 96, 5
    q = quantize(rng.standard_normal((n, k)), qtype)
    t = TYPES[qtype]
    x = rng.standard_normal((m, k)).astype(np.float32)
    a = rng.standard_normal((r, k)).astype(np.float32)
    bm = rng.standard_normal((n, r)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for b in (bias, None):
        got = _C.quant_lora_linear_fwd(x, q, t, b, a, bm, 0.5)
        want = reference.quant_lora_linear_fwd(x, q, t, b, a, bm, 0.5)
        for g_, w_ in zip(got, want):
            np.testing.assert_allclose(g_, w_, rtol=1e-4, atol=2e-4)
    g = rng.standard_normal((m, n)).astype(np.float32)
    xa = x @ a.T
    for needs in [(True,) * 4, (False, False, True, True), (True, False, False, False)]:
        got = _C.quant_lora_linear_bwd(g, x, q, t, a, bm, xa, 0.5, needs)
        want = reference.quant_lora_linear_bwd(g, x, q, t, a, bm, xa, 0.5, needs)
        for g_, w_ in zip(got, want):
            assert (g_ is None) == (w_ is None)
            if g_ is not None:
                np.testing.assert_allclose(g_, w_, rtol=1e-4, atol=2e-4)


def test_qlora_argument_checks() -> None:
    q = quantize(np.ones((6, 64)), "Q4_1")
    x, a, bm = (np.ones(s, np.float32) for s in ((2, 64), (3, 64), (6, 3)))
    with pytest.raises(ValueError, match="shapes do not fit"):
        _C.quant_lora_linear_fwd(x, q, 3, None, a, bm[:, :2].copy(), 1.0)
    with pytest.raises(ValueError, match="4 flags"):
        _C.quant_lora_linear_bwd(np.ones((2, 6), np.float32), x, q, 3, a, bm,
                                 np.ones((2, 3), np.float32), 1.0, (True,) * 5)
    with pytest.raises(ValueError, match="shapes do not fit"):
        _C.quant_lora_linear_bwd(np.ones((2, 5), np.float32), x, q, 3, a, bm,
                                 np.ones((2, 3), np.float32), 1.0, (True,) * 4)
