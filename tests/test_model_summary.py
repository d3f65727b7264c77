"""`minitl.nn.utils.summary`: shapes from one forward pass, parameter counts, no side effects."""

from __future__ import annotations

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from minitl.nn.utils import summary


def test_rows_hold_output_shapes_and_counts() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)
    model.train()
    s = summary(model, mt.randn(5, 4), depth=1)
    assert [(r.name, r.kind, r.output) for r in s.rows] == [
        ("", "Sequential", "(5, 3)"), ("0", "Linear", "(5, 8)"), ("1", "ReLU", "(5, 8)"),
        ("2", "Linear", "(5, 3)")]
    assert [r.params for r in s.rows] == [4 * 8 + 8 + 8 * 3 + 3, 40, 0, 27]
    assert s.rows[1].trainable == 8 and s.trainable == 8 + 27
    assert s.total_bytes == 4 * s.total
    assert model.training, "the model's mode is restored"
    assert not model[0]._forward_hooks, "the hooks are removed"
    text = str(s)
    assert "Sequential" in text and "(5, 8)" in text and "total 67 parameters" in text


def test_shared_parameters_count_once_and_depth_limits_rows() -> None:
    a = nn.Linear(3, 3)
    model = nn.Sequential(a, nn.Sequential(a, nn.Tanh()))
    s = summary(model, depth=0)
    assert len(s.rows) == 1 and s.total == 12 and s.rows[0].output == ""
    assert len(summary(model, depth=2).rows) == 4  # a appears once: named_modules dedups
    with pytest.raises(ValueError, match="depth"):
        summary(model, depth=-1)


def test_summary_leaves_the_output_alone() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    x = mt.randn(3, 2)
    before = model(x).numpy()
    s = summary(model, x)
    np.testing.assert_array_equal(model(x).numpy(), before)
    assert s.rows[-1].output == "(3, 1)"
