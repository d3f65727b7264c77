"""Files crafted to exhaust memory or time: PyTorch pickles whose views expand far beyond
their bytes, PEFT adapters whose config lies about their weights or whose target patterns
backtrack, and the temporary files an interrupted save leaves behind."""

from __future__ import annotations

import io

import numpy as np
import pytest
from test_torch_pickle import build

from minitl.io import torch_pickle
from minitl.io.torch_pickle import MAX_EXPANDED_ELEMENTS, MAX_EXTRA_BYTES, load_torch

# ---- torch pickles: one budget for the whole file --------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_many_expanded_views_cannot_demand_gigabytes(fmt: str) -> None:
    # 40 views of a 12-element float64 storage, each within the per-tensor cap but
    # 512 MiB once copied out: ~20 GiB from a file of a few KB
    side = 1 << 13
    assert side * side <= MAX_EXPANDED_ELEMENTS
    views = {f"w{i}": {"key": "0", "size": (side, side), "stride": (0, 0), "offset": i % 12}
             for i in range(40)}
    data = build(views, {"0": np.arange(12, dtype=np.float64)}, fmt)
    assert len(data) < 8192
    with pytest.raises(ValueError, match="beyond .* bytes"):
        load_torch(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_the_budget_is_total_not_per_tensor(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_pickle, "MAX_EXTRA_BYTES", 1000)
    base = np.arange(12, dtype=np.float32)  # 48 bytes
    one = {"key": "0", "size": (5, 12), "stride": (0, 1)}  # 240 bytes, 192 beyond the storage
    ok = load_torch(io.BytesIO(build({f"w{i}": {**one, "offset": 0} for i in range(4)},
                                     {"0": base}, fmt)))
    np.testing.assert_array_equal(ok["w3"], np.broadcast_to(base, (5, 12)))
    # identical views (tied weights) are one array and are charged once
    assert all(ok[k] is ok["w0"] for k in ok)
    distinct = {f"w{i}": {"key": "0", "size": (10, 6), "stride": (0, 1), "offset": i}
                for i in range(6)}  # 6 x 240 bytes > 48 + 1000
    with pytest.raises(ValueError, match="plus 1000 for expanded"):
        load_torch(io.BytesIO(build(distinct, {"0": base}, fmt)))
    fewer = dict(list(distinct.items())[:4])  # 4 x 240 = 960 <= 1048
    assert len(load_torch(io.BytesIO(build(fewer, {"0": base}, fmt)))) == 4


def test_plain_checkpoints_are_within_budget_whatever_their_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_pickle, "MAX_EXTRA_BYTES", 0)
    storages = {str(i): np.arange(1000 * (i + 1), dtype=np.float32) for i in range(3)}
    tensors = {f"t{i}": {"key": str(i), "size": (10, 100 * (i + 1))} for i in range(2)}
    # a storage split into disjoint views (q, k, v of one qkv weight) is within budget too
    tensors.update({f"part{j}": {"key": "2", "offset": 1000 * j, "size": (1000,)}
                    for j in range(3)})
    out = load_torch(io.BytesIO(build(tensors, storages, "zip")))
    np.testing.assert_array_equal(out["part2"], storages["2"][2000:])


def test_module_constants_keep_their_meaning() -> None:
    assert MAX_EXTRA_BYTES >= 4 * MAX_EXPANDED_ELEMENTS // 4  # one float32 expanded view fits
    assert "whole file" in (torch_pickle.__doc__ or "")
