"""`mt.save` / `mt.load` of nested checkpoints: dicts of state dicts and scalars go through a
flat safetensors file (dotted names + the `minitl.tree` metadata entry) and come back the
same; flat state dicts stay plain safetensors; other suffixes warn."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from minitl.io import load_file, load_metadata, save_file
from minitl.io.tree import TREE_KEY


def assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (mt.Tensor, np.ndarray)):
        want = a.numpy() if isinstance(a, mt.Tensor) else a
        assert isinstance(b, mt.Tensor), where
        assert b.dtype == want.dtype, where
        np.testing.assert_array_equal(b.numpy(), want, err_msg=where)
    else:
        assert type(b) is type(a) and b == a, where


def test_nested_checkpoint_round_trip(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    ckpt = {"model": model.state_dict(), "epoch": 3, "lr": 0.25, "name": "run-a", "best": True,
            "optim": {"step": 7, "moments": {"m": np.arange(5, dtype=np.float64)}},
            "empty": {}}
    path = tmp_path / "ckpt.safetensors"
    mt.save(ckpt, path)
    back = mt.load(path)
    assert_same(ckpt, back)
    # state-dict keys keep their dots: the tree, not a split on ".", decides the nesting
    assert set(back["model"]) == set(model.state_dict())
    fresh = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    fresh.load_state_dict(back["model"])
    x = mt.randn(5, 3)
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())


def test_nested_file_is_ordinary_safetensors_with_dotted_names(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    mt.save({"model": {"fc.weight": np.ones((2, 2), np.float32)}, "epoch": 3}, path,
            metadata={"format": "pt"})
    assert list(load_file(path)) == ["model.fc.weight"]
    meta = load_metadata(path)
    assert meta["format"] == "pt"
    assert json.loads(meta[TREE_KEY]) == {"model": {"fc.weight": None}, "epoch": 3}
    safetensors = pytest.importorskip("safetensors.numpy")
    assert list(safetensors.load_file(str(path))) == ["model.fc.weight"]


def test_flat_state_dict_file_is_unchanged(tmp_path: Path) -> None:
    sd = {"a.weight": np.arange(4, dtype=np.float32), "b": np.zeros(2, np.int64)}
    mt.save(sd, tmp_path / "mt.safetensors", metadata={"k": "v"})
    save_file(sd, tmp_path / "raw.safetensors", metadata={"k": "v"})
    assert ((tmp_path / "mt.safetensors").read_bytes()
            == (tmp_path / "raw.safetensors").read_bytes())
    back = mt.load(tmp_path / "mt.safetensors")
    assert set(back) == set(sd) and all(isinstance(v, mt.Tensor) for v in back.values())


@pytest.mark.parametrize("bad, match", [
    ({"x": [1, 2]}, "'x'.*list"),
    ({"m": {"x": None}}, "'m.x'.*NoneType"),
    ({"m": {1: np.zeros(1)}}, "key 1"),
    ({"a.b": np.zeros(1), "a": {"b": np.zeros(1)}}, "same name 'a.b'"),
])
def test_nested_save_errors(tmp_path: Path, bad: dict, match: str) -> None:
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match=match):
        mt.save(bad, path)
    assert not path.exists()
    with pytest.raises(ValueError, match="reserved"):
        mt.save({"epoch": 1}, path, metadata={TREE_KEY: "{}"})


@pytest.mark.parametrize("tree, match", [
    ("{not json", "not valid JSON"),
    ("[1]", "JSON object"),
    ('{"w": null, "v": null}', "'v'"),
    ('{"other": 1}', "does not place"),
    ('{"w": [1]}', "JSON list"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON|JSON object"),
])
def test_load_rejects_a_tree_that_does_not_match(tmp_path: Path, tree: str, match: str) -> None:
    path = tmp_path / "hostile.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, path, metadata={TREE_KEY: tree})
    with pytest.raises(ValueError, match=match):
        mt.load(path)


@pytest.mark.parametrize("name", ["x.pt", "x.bin", "x"])
def test_other_suffix_warns_and_still_writes_safetensors(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.warns(UserWarning, match="minitl writes safetensors"):
        mt.save({"w": mt.zeros(2), "epoch": 1}, path)
    assert mt.load(path)["epoch"] == 1


def test_safetensors_suffix_does_not_warn(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mt.save({"w": mt.zeros(2)}, tmp_path / "x.safetensors")


def test_failed_nested_save_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.safetensors"
    mt.save({"epoch": 1, "w": np.ones(3, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        mt.save({"epoch": 2, "w": np.ones(3, np.complex64)}, path)  # complex: no safetensors dtype
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_trainer_checkpoint_into_load_state_dict_points_to_model_state_dict(
        tmp_path: Path) -> None:
    from minitl.train.checkpoint import model_state_dict, save_state

    model = nn.Linear(3, 2)
    path = tmp_path / "ckpt.safetensors"
    save_state({"model": model.state_dict(), "step": 3}, path)
    with pytest.raises(RuntimeError, match=r"prefix 'model\.'.*model_state_dict"):
        model.load_state_dict(mt.load(path))
    model.load_state_dict(model_state_dict(path))  # what the hint says works
    with pytest.raises(RuntimeError) as err:  # an unrelated mismatch gets no hint
        model.load_state_dict({"w": mt.zeros(2, 3), "bias": mt.zeros(2)})
    assert "prefix" not in str(err.value)
