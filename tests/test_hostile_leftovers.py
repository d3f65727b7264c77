"""Hostile checks of three writes and one dtype found after the version counters landed:
LoRA merge/unmerge write into the base weight (a graph that saved it before must refuse
to run backward), Module.zero_grad(set_to_none=False) zeroes through `zero_()` (the
gradient's version counter and its views stay coherent, as with Optimizer.zero_grad), and
`mt.where` of two Python scalars takes PyTorch's result dtype."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from minitl import transfer as tl

INPLACE = "modified by an inplace operation"


class Two(nn.Module):
    """A layer in front of the adapted one, so the adapted layer's input requires grad and
    its dx (computed from the saved base weight) reaches `first`'s gradients."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.first, self.adapted = body, head

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return self.adapted(self.first(x).tanh())


def linear_model(dropout: float) -> tuple[nn.Module, mt.Tensor]:
    mt.manual_seed(0)
    model = Two(nn.Linear(4, 5), nn.Linear(5, 3))
    tl.apply_lora(model, tl.LoRAConfig(r=2, alpha=4, dropout=dropout, target=("adapted",)))
    return model, mt.randn(6, 4)


def conv_model(dropout: float) -> tuple[nn.Module, mt.Tensor]:
    mt.manual_seed(0)
    model = Two(nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1))
    tl.apply_lora(model, tl.LoRAConfig(r=2, alpha=4, dropout=dropout, target=("adapted",)))
    return model, mt.randn(2, 2, 5, 5)


def nonzero_factors(model: nn.Module) -> None:
    rng = np.random.default_rng(1)
    with mt.no_grad():
        for p in tl.lora_parameters(model):
            p.copy_(rng.standard_normal(p.shape).astype(p.dtype) * 0.3)


LAYERS: list[tuple[str, Callable[[float], tuple[nn.Module, mt.Tensor]], float]] = [
    ("linear-fused", linear_model, 0.0),
    ("linear-dropout", linear_model, 0.25),
    ("conv2d", conv_model, 0.0),
]


@pytest.mark.parametrize("make,dropout", [(m, p) for _, m, p in LAYERS],
                         ids=[n for n, _, _ in LAYERS])
def test_merge_after_forward_raises_at_backward(make: Any, dropout: float) -> None:
    model, x = make(dropout)
    nonzero_factors(model)
    model.first.requires_grad_(True)  # the layer in front trains: it needs dx of `adapted`
    layer = model.adapted
    v = layer.weight._version
    loss = model(x).sum()  # saves the unmerged base weight for dx
    tl.merge_lora(model)
    assert layer.merged and layer.weight._version == v + 1
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()


@pytest.mark.parametrize("make,dropout", [(m, p) for _, m, p in LAYERS],
                         ids=[n for n, _, _ in LAYERS])
def test_unmerge_after_forward_raises_at_backward(make: Any, dropout: float) -> None:
    model, x = make(dropout)
    nonzero_factors(model)
    model.first.requires_grad_(True)
    tl.merge_lora(model)
    loss = model(x).sum()  # saves the merged weight
    tl.unmerge_lora(model)
    assert not model.adapted.merged
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()


@pytest.mark.parametrize("make,dropout", [(m, p) for _, m, p in LAYERS],
                         ids=[n for n, _, _ in LAYERS])
def test_graphs_built_after_merge_or_unmerge_run(make: Any, dropout: float) -> None:
    """Only graphs that saved the weight before the write are refused: the bumped counter
    is saved again by the next forward, and merged/unmerged gradients of the layer in front
    agree (eval mode: no dropout, so the two forwards compute the same function)."""
    model, x = make(dropout)
    nonzero_factors(model)
    model.first.requires_grad_(True)
    model.eval()

    def first_grad() -> np.ndarray:
        model.zero_grad()
        model(x).sum().backward()
        return model.first.weight.grad.numpy().copy()

    before = first_grad()
    tl.merge_lora(model)
    merged = first_grad()
    tl.unmerge_lora(model)
    after = first_grad()
    np.testing.assert_allclose(merged, before, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_merge_with_no_active_adapter_leaves_the_version_alone() -> None:
    model, _ = linear_model(0.0)
    tl.merge_lora(model)
    tl.unmerge_lora(model)
    v = model.adapted.weight._version
    tl.set_adapter(model, None)
    tl.merge_lora(model)  # a no-op: nothing written
    tl.unmerge_lora(model)
    assert model.adapted.weight._version == v


# ---- zero_grad(set_to_none=False) -------------------------------------------------------

def _grad_used_in_a_graph() -> tuple[nn.Linear, mt.Tensor, mt.Tensor]:
    mt.manual_seed(0)
    lin = nn.Linear(3, 2)
    lin(mt.randn(4, 3)).sum().backward()
    w2 = mt.randn(2, 3, requires_grad=True)
    y = (w2 * lin.weight.grad).sum()  # Mul saves the gradient for w2's gradient
    return lin, w2, y


@pytest.mark.parametrize("zero", [
    lambda lin: lin.zero_grad(set_to_none=False),
    lambda lin: mt.optim.SGD(lin.parameters(), lr=0.1).zero_grad(set_to_none=False),
], ids=["module", "optimizer"])
def test_zero_grad_in_place_bumps_the_gradient_version(zero: Any) -> None:
    """Before, Module.zero_grad wrote `grad.data[...] = 0` without a bump: w2.grad came out
    all zeros instead of the old gradient. Now both zero_grads refuse the stale graph."""
    lin, _w2, y = _grad_used_in_a_graph()
    g = lin.weight.grad
    row = g[0]  # a view: it shares the storage and so the counter
    v = g._version
    zero(lin)
    assert lin.weight.grad is g  # zeroed in place, the same tensor
    assert np.all(g.numpy() == 0) and np.all(row.numpy() == 0)
    assert g._version == v + 1 and row._version == v + 1
    with pytest.raises(RuntimeError, match=INPLACE):
        y.backward()


def test_zero_grad_in_place_then_accumulate() -> None:
    lin, _, _ = _grad_used_in_a_graph()
    x = mt.randn(4, 3)
    lin.zero_grad(set_to_none=False)
    lin(x).sum().backward()
    once = lin.weight.grad.numpy().copy()
    lin.zero_grad()
    lin(x).sum().backward()
    np.testing.assert_array_equal(lin.weight.grad.numpy(), once)


def test_zero_grad_on_a_read_only_gradient_is_a_clear_error() -> None:
    lin = nn.Linear(3, 2)
    lin.weight.grad = mt.zeros(1, 3).expand(2, 3)  # several elements share one location
    with pytest.raises(RuntimeError, match="read-only view"):
        lin.zero_grad(set_to_none=False)


# ---- where over Python scalars ----------------------------------------------------------

@pytest.mark.parametrize("x,y,want", [
    (1.0, 2.0, "float32"), (1, 2.0, "float32"), (1, 2, "int64"), (True, False, "bool"),
], ids=["float-float", "int-float", "int-int", "bool-bool"])
def test_where_of_python_scalars_takes_pytorchs_dtype(x: Any, y: Any, want: str) -> None:
    """torch.where(cond, 1.0, 2.0) is float32 (the default dtype), as mt.where(cond, x, y)
    already is when x or y is a Tensor (dtypes.result_type: Python floats are the default
    float dtype)."""
    out = mt.where(mt.tensor([True, False, True]), x, y)
    assert str(out.numpy().dtype) == want
    np.testing.assert_array_equal(out.numpy(), np.where([True, False, True], x, y))


def test_where_of_python_scalars_refuses_a_non_bool_condition() -> None:
    with pytest.raises(RuntimeError, match="bool"):  # as with a Tensor operand, and PyTorch
        mt.where(mt.tensor([1, 0, 1]), 1.0, 2.0)
