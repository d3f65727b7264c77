"""scaled_dot_product_attention (bool / float masks, causal, scale, GQA, fully masked rows,
dropout) and the fused lora_linear op: float64 gradchecks, torch parity, LoRA invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F


def _rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _tf():
    import torch.nn.functional as tf

    return tf


def _as(lib: str, a: np.ndarray | None) -> object:
    if a is None:
        return None
    return mt.tensor(a) if lib == "mt" else torch.tensor(a)


# ---- scaled_dot_product_attention -------------------------------------------------------


@settings(max_examples=12)
@given(batch=st.lists(st.integers(1, 2), max_size=2).map(tuple), lq=st.integers(1, 3),
       ls=st.integers(1, 3), e=st.integers(1, 3), ev=st.integers(1, 2),
       mode=st.sampled_from(["none", "bool", "float", "causal"]))
def test_sdpa_gradcheck(batch: tuple[int, ...], lq: int, ls: int, e: int, ev: int, mode: str
                        ) -> None:
    rng = np.random.default_rng(lq * 7 + ls)
    mask = None
    if mode == "bool":
        mask = rng.random((lq, ls)) < 0.7
        mask[:, 0] = True  # every row attends somewhere, so the gradient is smooth
    elif mode == "float":
        mask = rng.standard_normal((lq, ls))

    def fn(q: mt.Tensor, k: mt.Tensor, v: mt.Tensor) -> mt.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_as("mt", mask),
                                              is_causal=mode == "causal")

    gradcheck(fn, [_rand(batch + (lq, e), 1), _rand(batch + (ls, e), 2),
                   _rand(batch + (ls, ev), 3)])


SDPA_CASES = ["none", "bool", "bool_broadcast", "float", "float_-inf", "causal",
              "causal_rect", "scale"]


@pytest.mark.parametrize("case", SDPA_CASES)
def test_sdpa_matches_torch(case: str) -> None:
    b, h, lq, ls, e = 2, 3, 4, 4 if case != "causal_rect" else 6, 5
    rng = np.random.default_rng(0)
    mask, causal, scale = None, case.startswith("causal"), 0.3 if case == "scale" else None
    if case == "bool":
        mask = rng.random((b, h, lq, ls)) < 0.6
        mask[..., 0] = True
    elif case == "bool_broadcast":
        mask = rng.random((b, 1, 1, ls)) < 0.6  # a key-padding mask
        mask[..., 0] = True
    elif case == "float":
        mask = rng.standard_normal((lq, ls))
    elif case == "float_-inf":
        mask = np.where(rng.random((lq, ls)) < 0.4, -np.inf, 0.0)
        mask[:, 1] = 0.0
    q, k, v = _rand((b, h, lq, e), 1), _rand((b, h, ls, e), 2), _rand((b, h, ls, e), 3)
    check_op(lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=_as("mt", mask), is_causal=causal, scale=scale),
        lambda q, k, v: _tf().scaled_dot_product_attention(
            q, k, v, attn_mask=_as("torch", mask), is_causal=causal, scale=scale), [q, k, v])


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_give_zeros_like_torch(kind: str) -> None:
    keep = np.ones((3, 4), dtype=bool)
    keep[1] = False
    mask = keep if kind == "bool" else np.where(keep, 0.0, -np.inf)
    q, k, v = _rand((2, 3, 5), 1), _rand((2, 4, 5), 2), _rand((2, 4, 5), 3)
    qt = mt.tensor(q, requires_grad=True)
    out = F.scaled_dot_product_attention(qt, mt.tensor(k), mt.tensor(v),
                                         attn_mask=mt.tensor(mask))
    assert (out.numpy()[:, 1] == 0).all() and np.isfinite(out.numpy()).all()
    out.sum().backward()
    assert (qt.grad.numpy()[:, 1] == 0).all() and np.isfinite(qt.grad.numpy()).all()
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, _as("mt", mask)),
             lambda q, k, v: _tf().scaled_dot_product_attention(q, k, v, _as("torch", mask)),
             [q, k, v])


def test_sdpa_grouped_query_attention_matches_torch() -> None:
    q, k, v = _rand((2, 4, 3, 5), 1), _rand((2, 2, 6, 5), 2), _rand((2, 2, 6, 5), 3)
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                            enable_gqa=True),
             lambda q, k, v: _tf().scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                enable_gqa=True), [q, k, v])


def test_sdpa_float32_and_dropout() -> None:
    q = mt.tensor(_rand((2, 4, 8), 1).astype(np.float32))
    out = F.scaled_dot_product_attention(q, q, q)
    assert out.dtype == mt.float32
    assert F.scaled_dot_product_attention(q, q, q, dropout_p=1.0).numpy().sum() == 0
    mt.manual_seed(0)
    a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5).numpy()
    mt.manual_seed(0)
    np.testing.assert_array_equal(a, F.scaled_dot_product_attention(q, q, q,
                                                                    dropout_p=0.5).numpy())


def test_sdpa_reference_formula_and_errors() -> None:
    q, k, v = _rand((3, 4), 1), _rand((5, 4), 2), _rand((5, 2), 3)
    s = q @ k.T / math.sqrt(4)
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = (p / p.sum(-1, keepdims=True)) @ v
    got = F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k), mt.tensor(v)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 3\)"):
        F.scaled_dot_product_attention(mt.tensor(q), mt.randn(5, 3, dtype=mt.float64),
                                       mt.tensor(v))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k), mt.tensor(v),
                                       attn_mask=mt.ones(3, 5).bool(), is_causal=True)
    with pytest.raises(TypeError, match="int64"):
        F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k), mt.tensor(v),
                                       attn_mask=mt.ones(3, 5).long())


# ---- lora_linear ------------------------------------------------------------------------


@settings(max_examples=12)
@given(lead=st.lists(st.integers(1, 3), max_size=2).map(tuple), din=st.integers(1, 4),
       dout=st.integers(1, 4), r=st.integers(1, 3), bias=st.booleans())
def test_lora_linear_gradcheck(lead: tuple[int, ...], din: int, dout: int, r: int, bias: bool
                               ) -> None:
    def fn(x: mt.Tensor, w: mt.Tensor, b: mt.Tensor, a: mt.Tensor, bm: mt.Tensor
           ) -> mt.Tensor:
        return F.lora_linear(x, w, b if bias else None, a, bm, 0.5)

    gradcheck(fn, [_rand(lead + (din,), 1), _rand((dout, din), 2), _rand((dout,), 3),
                   _rand((r, din), 4), _rand((dout, r), 5)])


@pytest.mark.parametrize("bias", [False, True])
def test_lora_linear_matches_torch_composition(bias: bool) -> None:
    x, w, b = _rand((2, 3, 6), 1), _rand((5, 6), 2), _rand((5,), 3)
    a, bm = _rand((2, 6), 4), _rand((5, 2), 5)

    def ref(x: object, w: object, b: object, a: object, bm: object) -> object:
        return _tf().linear(x, w, b if bias else None) + 2.0 * ((x @ a.T) @ bm.T)

    check_op(lambda x, w, b, a, bm: F.lora_linear(x, w, b if bias else None, a, bm, 2.0), ref,
             [x, w, b, a, bm])


def test_lora_linear_frozen_base_and_zero_b_invariants() -> None:
    x = mt.tensor(_rand((4, 6), 1).astype(np.float32))
    w = mt.tensor(_rand((3, 6), 2).astype(np.float32))  # frozen: no requires_grad
    b = mt.tensor(_rand((3,), 3).astype(np.float32))
    a = mt.tensor(_rand((2, 6), 4).astype(np.float32), requires_grad=True)
    bm = mt.zeros(3, 2, requires_grad=True)
    y = F.lora_linear(x, w, b, a, bm, 4.0)
    np.testing.assert_allclose(y.numpy(), F.linear(x, w, b).numpy(), rtol=1e-6)  # B = 0
    y.sum().backward()
    assert w.grad is None and x.grad is None
    assert a.grad is not None and (a.grad.numpy() == 0).all()  # dA = s (g B)^T x = 0
    assert bm.grad is not None and np.abs(bm.grad.numpy()).sum() > 0
    merged = F.linear(x, mt.tensor(w.numpy() + 4.0 * bm.numpy() @ a.numpy()), b)
    np.testing.assert_allclose(y.numpy(), merged.numpy(), rtol=1e-6)


def test_lora_linear_errors_name_shapes() -> None:
    x, w = mt.randn(2, 6), mt.randn(3, 6)
    with pytest.raises(ValueError, match=r"lora_A \(2, 5\)"):
        F.lora_linear(x, w, None, mt.randn(2, 5), mt.randn(3, 2), 1.0)
    with pytest.raises(ValueError, match=r"x \(2, 4\)"):
        F.lora_linear(mt.randn(2, 4), w, None, mt.randn(2, 6), mt.randn(3, 2), 1.0)
    with pytest.raises(TypeError, match="lora_B dtype float64"):
        F.lora_linear(x, w, None, mt.randn(2, 6), mt.randn(3, 2, dtype=mt.float64), 1.0)


@requires_torch
def test_lora_linear_goes_through_backend_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from minitl.backend import get_backend

    backend, calls = get_backend("cpu"), []
    fwd, bwd = backend.lora_linear_fwd, backend.lora_linear_bwd
    monkeypatch.setattr(backend, "lora_linear_fwd", lambda *a: calls.append("fwd") or fwd(*a))
    monkeypatch.setattr(backend, "lora_linear_bwd", lambda *a: calls.append(a[-1]) or bwd(*a))
    x = mt.randn(2, 4)
    a = mt.randn(2, 4, requires_grad=True)
    F.lora_linear(x, mt.randn(3, 4), None, a, mt.randn(3, 2), 1.0).sum().backward()
    # only dA was needed: the kernel is told so and skips dx, dW, db, dB
    assert calls == ["fwd", (False, False, False, True, False)]
