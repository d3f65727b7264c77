"""The C++ embedding backward (minitl._C.embedding_bwd, csrc/cpu/embedding.cpp) against the
numpy reference (np.add.at) and PyTorch: repeated ids, the padding row, scale_grad_by_freq,
widths that cut the SIMD width, non-finite gradients, and the ids and arguments it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import requires_torch, torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F
from minitl.backend import cpu, cpu_embedding, get_backend, reference

pytestmark = pytest.mark.skipif(cpu.native_module() is None, reason="minitl._C not built")


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 70), d=st.sampled_from([1, 7, 16, 37, 129]), n=st.integers(1, 40),
       pad=st.one_of(st.none(), st.integers(-3, 2)), by_freq=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matches_the_reference(m: int, d: int, n: int, pad: int | None, by_freq: bool,
                               seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((m, d)).astype(np.float32)
    ids = rng.integers(0, n, m)  # few ids: repeats are common
    pad = None if pad is None or not -n <= pad < n else pad
    got = cpu_embedding.embedding_bwd(g, ids, n, pad, by_freq)
    want = reference.embedding_bwd(g, ids, n, pad, by_freq)
    assert got.dtype == np.float32 and got.shape == (n, d)
    # rows are summed in id order and divided as the reference does: the same floats
    np.testing.assert_array_equal(got, want)


def test_non_finite_gradients_land_where_the_reference_puts_them() -> None:
    g = np.array([[np.nan, 1.0], [np.inf, 2.0], [-np.inf, 3.0], [5.0, 4.0]], np.float32)
    ids = np.array([1, 2, 2, 0])
    got = cpu_embedding.embedding_bwd(g, ids, 3, 0, False)
    with np.errstate(invalid="ignore"):  # inf + -inf in the reference's np.add.at
        want = reference.embedding_bwd(g, ids, 3, 0, False)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[1, 0]) and np.isnan(got[2, 0]) and got[0, 0] == 0.0


def test_strided_and_float64_inputs_take_the_wrappers_routes() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((12, 40)).astype(np.float32)[:, ::2]  # not C-contiguous
    ids = rng.integers(0, 5, 12)
    np.testing.assert_array_equal(cpu_embedding.embedding_bwd(g, ids, 5, None, False),
                                  reference.embedding_bwd(g, ids, 5, None, False))
    g64 = g.astype(np.float64)
    got = cpu_embedding.embedding_bwd(g64, ids, 5, 1, True)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, reference.embedding_bwd(g64, ids, 5, 1, True))


def test_ids_out_of_range_raise_before_anything_is_written() -> None:
    _C = cpu.native_module()
    g = np.ones((3, 4), np.float32)
    dw = np.zeros((5, 4), np.float32)
    for bad in (5, -1):
        with pytest.raises(IndexError, match=f"index {bad} at position 2"):
            _C.embedding_bwd(g, np.array([0, 1, bad]), dw, None, False)
        assert not dw.any()
    with pytest.raises(IndexError, match="out of range"):
        cpu_embedding.embedding_bwd(g, np.array([0, 7, 1]), 5, None, False)


def test_bad_arguments_are_refused_with_their_shapes() -> None:
    _C = cpu.native_module()
    g, ids, dw = np.ones((3, 4), np.float32), np.arange(3), np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="float32"):
        _C.embedding_bwd(g.astype(np.float64), ids, dw, None, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.embedding_bwd(np.ones((4, 3), np.float32).T, ids, dw, None, False)
    with pytest.raises(ValueError, match="int64"):
        _C.embedding_bwd(g, ids.astype(np.int32), dw, None, False)
    with pytest.raises(ValueError, match=r"shapes do not fit: g \(3, 4\), ids \(2,\)"):
        _C.embedding_bwd(g, ids[:2], dw, None, False)
    with pytest.raises(ValueError, match="dw"):
        _C.embedding_bwd(g, ids, np.zeros((5, 3), np.float32), None, False)
    with pytest.raises(ValueError, match="padding_idx 5"):
        _C.embedding_bwd(g, ids, dw, 5, False)
    dw.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.embedding_bwd(g, ids, dw, None, False)


def test_the_op_runs_the_native_kernel() -> None:
    assert "embedding_bwd" in cpu.native_kernels()
    assert get_backend("cpu").paths["embedding_bwd"] == "native"


@requires_torch
@pytest.mark.parametrize("pad, by_freq", [(None, False), (0, False), (-2, True), (3, True)])
def test_gradient_matches_torch(pad: int | None, by_freq: bool) -> None:
    rng = np.random.default_rng(1)
    table = rng.standard_normal((11, 19)).astype(np.float32)
    ids = rng.integers(0, 11, (4, 9))
    ids[0, :3] = 3  # repeats, and the padding row when pad = 3
    w = mt.tensor(table, requires_grad=True)
    out = F.embedding(mt.tensor(ids), w, padding_idx=pad, scale_grad_by_freq=by_freq)
    gy = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(mt.tensor(gy))
    tw = torch.tensor(table, requires_grad=True)
    tout = torch.nn.functional.embedding(torch.from_numpy(ids), tw, padding_idx=pad,
                                         scale_grad_by_freq=by_freq)
    tout.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-6, atol=1e-6)
