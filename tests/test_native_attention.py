"""The fused C++ attention (minitl._C.attention_fwd / attention_bwd, csrc/cpu/attention.cpp)
against its numpy reference (minitl/backend/cpu_attention.py), the composed op it replaces
(MINITL_KERNELS=reference) and PyTorch: sizes that cut every register tile on every GEMM path,
float and bool masks (shared and per head), causal masks, fully masked rows, NaN and +inf
scores, dropout, and every argument the binding must refuse."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import gemm_path, requires_torch, torch  # noqa: F401  (gemm_path: `path`)
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F
from minitl.backend import cpu, cpu_attention

pytestmark = pytest.mark.skipif(cpu.native_module() is None, reason="minitl._C not built")
ALL = (True, True, True, True)


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _close(got: Any, want: Any, tol: float = 1e-4) -> None:
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None
            continue
        scale = 1 + np.abs(b[np.isfinite(b)]).max(initial=0)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def _check(rng: np.random.Generator, lead: tuple[int, ...], nq: int, s: int, e: int, ev: int,
           mask: Any, drop: Any, scale: float) -> None:
    q, k, v = _rand(rng, *lead, nq, e), _rand(rng, *lead, s, e), _rand(rng, *lead, s, ev)
    o, p = cpu_attention.attention_fwd(q, k, v, mask, drop, scale)
    want = cpu_attention.attention_fwd_reference(q, k, v, mask, drop, scale)
    assert o.shape == lead + (nq, ev) and p.shape == lead + (nq, s)
    _close((o, p), want)
    g = _rand(rng, *lead, nq, ev)
    _close(cpu_attention.attention_bwd(g, q, k, v, p, drop, scale, ALL),
           cpu_attention.attention_bwd_reference(g, q, k, v, want[1], drop, scale, ALL))


@settings(max_examples=25, deadline=None)
@given(nq=st.sampled_from([1, 5, 13, 33]), s=st.sampled_from([1, 7, 17, 40]),
       e=st.sampled_from([1, 8, 13, 64]), ev=st.sampled_from([3, 16, 33]),
       mask=st.sampled_from(["none", "float", "bool", "bool_heads", "float_heads",
                             "padding", "per_head_only", "keys_only", "queries_only"]),
       dropout=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_the_reference(nq: int, s: int, e: int, ev: int, mask: str, dropout: bool,
                               seed: int) -> None:
    rng = np.random.default_rng(seed)
    lead = (2, 3)
    m: Any = None
    if mask == "float":
        m = _rand(rng, nq, s)
    elif mask == "float_heads":
        m = _rand(rng, 2, 1, nq, s)  # per batch, shared by the heads: materialised per head
    elif mask.startswith("bool"):
        m = rng.random((*lead, nq, s) if mask == "bool_heads" else (1, nq, s)) < 0.7
    elif mask == "padding":  # a key padding mask per batch: (N, 1, 1, S)
        m = rng.random((2, 1, 1, s)) < 0.8
    elif mask == "per_head_only":  # varies over heads, broadcast over the batch before them
        m = _rand(rng, 3, nq, s)
    elif mask == "keys_only":
        m = _rand(rng, s)
    elif mask == "queries_only":  # broadcast along the keys
        m = _rand(rng, 2, 3, nq, 1)
    drop = None
    if dropout:
        drop = (rng.random((*lead, nq, s)) < 0.8).astype(np.float32) / np.float32(0.8)
    _check(rng, lead, nq, s, e, ev, m, drop, 0.3)


@pytest.mark.parametrize("mshape, slices", [
    ((13, 17), (1, 13, 17)), ((17,), (1, 1, 17)), ((2, 1, 1, 17), (2, 1, 17)),
    ((1, 3, 13, 17), (6, 13, 17)), ((2, 3, 13, 1), (6, 13, 17)), ((2, 1, 13, 17), (2, 13, 17))])
def test_mask_layouts(mshape: tuple[int, ...], slices: tuple[int, ...]) -> None:
    """Each mask reaches the kernel as (M, rows, S) slices, materialised only where it must be
    (a padding mask stays one row per batch), and gives the reference's answer."""
    rng = np.random.default_rng(9)
    for mask in (_rand(rng, *mshape), rng.random(mshape) < 0.7):
        assert cpu_attention._mask_operand(mask, (2, 3, 13, 17)).shape == slices
        _check(rng, (2, 3), 13, 17, 8, 5, mask, None, 0.5)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (13, 17, 5, 7), (36, 64, 32, 64),
                                   (129, 97, 64, 48)])
def test_every_gemm_path(path: str, shape: tuple[int, int, int, int]) -> None:
    nq, s, e, ev = shape
    rng = np.random.default_rng(3)
    _check(rng, (2,), nq, s, e, ev, rng.random((nq, s)) < 0.8, None, 1 / np.sqrt(e))


@pytest.mark.parametrize("shape", [(2, 0, 3, 4, 5), (2, 3, 0, 4, 5), (2, 3, 4, 0, 5),
                                   (2, 3, 4, 5, 0), (0, 3, 4, 5, 6)])
def test_empty_dimensions(shape: tuple[int, int, int, int, int]) -> None:
    """No queries, no keys (zero output, as the reference's empty sums), empty heads."""
    b, nq, s, e, ev = shape
    rng = np.random.default_rng(8)
    _check(rng, (b,), nq, s, e, ev, None, None, 0.5)


def test_fully_masked_rows_give_zero_weights_and_gradients() -> None:
    rng = np.random.default_rng(0)
    q, k, v, g = _rand(rng, 2, 4, 3), _rand(rng, 2, 6, 3), _rand(rng, 2, 6, 5), \
        _rand(rng, 2, 4, 5)
    keep = np.ones((4, 6), bool)
    keep[1] = False
    add = np.zeros((4, 6), np.float32)
    add[2] = -np.inf
    for mask in (keep, add):
        o, p = cpu_attention.attention_fwd(q, k, v, mask, None, 0.5)
        dead = 1 if mask is keep else 2
        assert not p[:, dead].any() and not o[:, dead].any()
        dq, _, _, dmask = cpu_attention.attention_bwd(g, q, k, v, p, None, 0.5, ALL)
        assert not dq[:, dead].any() and not dmask[:, dead].any()
        _close((o, p), cpu_attention.attention_fwd_reference(q, k, v, mask, None, 0.5))


def test_nan_and_inf_scores_follow_the_reference() -> None:
    rng = np.random.default_rng(1)
    q, k, v = _rand(rng, 1, 4, 3), _rand(rng, 1, 6, 3), _rand(rng, 1, 6, 5)
    add = np.zeros((4, 6), np.float32)
    add[0, 2] = np.nan
    add[1, 3] = np.inf
    add[2, :5] = -np.inf  # one key left
    with np.errstate(invalid="ignore"):
        want = cpu_attention.attention_fwd_reference(q, k, v, add, None, 0.5)
    o, p = cpu_attention.attention_fwd(q, k, v, add, None, 0.5)
    np.testing.assert_array_equal(np.isnan(p), np.isnan(want[1]))
    assert np.isnan(p[0, 0]).all() and np.isnan(o[0, 0]).all()
    np.testing.assert_allclose(p[0, 2:], want[1][0, 2:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p[0, 1], want[1][0, 1])  # 1 at the +inf key, NaN elsewhere


def test_without_weights_the_output_is_the_same() -> None:
    rng = np.random.default_rng(2)
    q, k, v = _rand(rng, 3, 9, 8), _rand(rng, 3, 11, 8), _rand(rng, 3, 11, 4)
    o, p = cpu_attention.attention_fwd(q, k, v, None, None, 0.4)
    o2, p2 = cpu_attention.attention_fwd(q, k, v, None, None, 0.4, need_weights=False)
    assert p2 is None
    np.testing.assert_array_equal(o, o2)


def test_only_the_gradients_asked_for_are_computed() -> None:
    rng = np.random.default_rng(4)
    q, k, v, g = _rand(rng, 2, 5, 4), _rand(rng, 2, 7, 4), _rand(rng, 2, 7, 3), \
        _rand(rng, 2, 5, 3)
    _, p = cpu_attention.attention_fwd(q, k, v, None, None, 0.5)
    full = cpu_attention.attention_bwd(g, q, k, v, p, None, 0.5, ALL)
    for i in range(4):
        needs = tuple(j == i for j in range(4))
        got = cpu_attention.attention_bwd(g, q, k, v, p, None, 0.5, needs)  # type: ignore[arg-type]
        assert all((d is None) == (j != i) for j, d in enumerate(got))
        np.testing.assert_array_equal(got[i], full[i])


def test_bad_arguments_are_refused_with_their_shapes() -> None:
    _C = cpu.native_module()
    q, k, v = (np.ones((2, 4, 3), np.float32), np.ones((2, 5, 3), np.float32),
               np.ones((2, 5, 6), np.float32))
    with pytest.raises(ValueError, match="float32"):
        _C.attention_fwd(q.astype(np.float64), k, v, None, None, 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.attention_fwd(np.ones((2, 3, 4), np.float32).transpose(0, 2, 1), k, v, None, None,
                         1.0)
    with pytest.raises(ValueError, match=r"shapes do not fit: q \(2, 4, 3\), k \(2, 6, 3\)"):
        _C.attention_fwd(q, np.ones((2, 6, 3), np.float32), v, None, None, 1.0)
    with pytest.raises(ValueError, match="3-D"):
        _C.attention_fwd(q[0], k, v, None, None, 1.0)
    with pytest.raises(ValueError, match=r"mask \(5, 4\)"):
        _C.attention_fwd(q, k, v, np.ones((5, 4), bool), None, 1.0)
    with pytest.raises(ValueError, match="float32"):
        _C.attention_fwd(q, k, v, np.ones((4, 5), np.int32), None, 1.0)
    with pytest.raises(ValueError, match=r"drop \(2, 4, 4\)"):
        _C.attention_fwd(q, k, v, None, np.ones((2, 4, 4), np.float32), 1.0)
    o, p = _C.attention_fwd(q, k, v, None, None, 1.0)
    with pytest.raises(ValueError, match=r"g \(2, 4, 5\)"):
        _C.attention_bwd(np.ones((2, 4, 5), np.float32), q, k, v, p, None, 1.0, ALL)
    with pytest.raises(ValueError, match="4 flags"):
        _C.attention_bwd(o, q, k, v, p, None, 1.0, (True, True))


def _sdpa(lib: Any, q: Any, k: Any, v: Any, **kw: Any) -> Any:
    fn = F.scaled_dot_product_attention if lib is mt else \
        torch.nn.functional.scaled_dot_product_attention
    return fn(q, k, v, **kw)


@requires_torch
@pytest.mark.parametrize("kw", [
    {}, {"is_causal": True}, {"scale": 0.3}, {"attn_mask": "bool"}, {"attn_mask": "float"},
    {"enable_gqa": True}])
def test_op_matches_torch(kw: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    hk = 2 if kw.get("enable_gqa") else 4
    arrays = [_rand(rng, 2, 4, 19, 16), _rand(rng, 2, hk, 23, 16), _rand(rng, 2, hk, 23, 8)]
    if kw.get("attn_mask") == "bool":
        kw = {"attn_mask": rng.random((19, 23)) < 0.8}
    elif kw.get("attn_mask") == "float":
        kw = {"attn_mask": _rand(rng, 2, 1, 19, 23)}
    gy = _rand(rng, 2, 4, 19, 8)
    got = [mt.tensor(a, requires_grad=True) for a in arrays]
    want = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = _sdpa(mt, *got, **{n: mt.tensor(m) if isinstance(m, np.ndarray) else m
                             for n, m in kw.items()})
    tout = _sdpa(torch, *want, **{n: torch.from_numpy(m) if isinstance(m, np.ndarray) else m
                                  for n, m in kw.items()})
    out.backward(mt.tensor(gy))
    tout.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)


def _op_run(monkeypatch: pytest.MonkeyPatch, mode: str, arrays: list[np.ndarray],
            mask: np.ndarray, dropout_p: float) -> list[np.ndarray]:
    monkeypatch.setenv("MINITL_KERNELS", mode)
    mt.manual_seed(7)
    leaves = [mt.tensor(a, requires_grad=True) for a in arrays]
    out = F.scaled_dot_product_attention(*leaves[:3], attn_mask=leaves[3], dropout_p=dropout_p)
    out.backward(mt.ones_like(out))
    return [out.numpy()] + [t.grad.numpy() for t in leaves]


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_fused_op_equals_the_composed_op(monkeypatch: pytest.MonkeyPatch,
                                         dropout_p: float) -> None:
    """Same values, same gradients (the float mask's included), same dropout draws."""
    rng = np.random.default_rng(6)
    arrays = [_rand(rng, 3, 2, 9, 8), _rand(rng, 3, 2, 12, 8), _rand(rng, 3, 2, 12, 5),
              _rand(rng, 2, 9, 12)]
    from minitl.ops.attention import _fused_kernels

    assert _fused_kernels(*arrays) is cpu_attention
    fused = _op_run(monkeypatch, "auto", arrays, arrays[3], dropout_p)
    composed = _op_run(monkeypatch, "reference", arrays, arrays[3], dropout_p)
    _close(fused, composed)
