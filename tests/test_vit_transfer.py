"""The transfer protocol of examples/vision_pretraining.py on a tiny ViT: layer-wise lr decay
gives each layer the rate it claims, the grid head reads every patch token, the probe's
features have the shapes it standardises, and every choice is made on validation."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import minitl as mt
from minitl.models import ViT, ViTConfig

SMALL = {"image_size": 12, "patch_size": 4, "in_channels": 1, "num_classes": 5,
         "embed_dim": 16, "depth": 3, "num_heads": 2}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "examples" / "vision_pretraining.py"
    spec = importlib.util.spec_from_file_location("vision_pretraining_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_data(n: int = 40) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 10
    # Class c lights up pixel c of the top row, so a probe has something to find.
    x = rng.normal(0, 0.1, (n, 1, 12, 12)).astype(np.float32)
    x[np.arange(n), 0, 0, y] += 3.0
    return {"train": (x, y), "val": (x[:20], y[:20]), "test": (x[20:], y[20:])}


def test_layer_groups_decay_the_rate_from_head_to_embeddings(example: ModuleType) -> None:
    mt.manual_seed(0)
    net = ViT(ViTConfig(**SMALL))  # type: ignore[arg-type]
    groups = example.layer_groups(net, 1e-3, 0.5)
    lr = {id(g["params"][0]): g["lr"] for g in groups}
    decay = {id(g["params"][0]): g["weight_decay"] for g in groups}
    named = dict(net.named_parameters())
    assert lr[id(named["head.weight"])] == lr[id(named["norm.bias"])] == 1e-3
    for i in range(3):  # block i: lr * 0.5^(depth - i)
        assert lr[id(named[f"blocks.{i}.attn.qkv.weight"])] == pytest.approx(1e-3 * 0.5 ** (3 - i))
    for name in ("patch_embed.proj.weight", "cls_token", "pos_embed"):
        assert lr[id(named[name])] == pytest.approx(1e-3 * 0.5 ** 4)
    assert decay[id(named["blocks.0.mlp.fc1.weight"])] == 0.05
    assert decay[id(named["blocks.0.mlp.fc1.bias"])] == decay[id(named["pos_embed"])] == 0.0
    assert len(groups) == len(named)
    # Under GridHead the backbone's names gain a prefix; the rates must not change.
    grid = example.GridHead(net, 10)
    by_id = {id(g["params"][0]): g["lr"] for g in example.layer_groups(grid, 1e-3, 0.5)}
    assert by_id[id(named["blocks.0.attn.qkv.weight"])] == pytest.approx(1e-3 * 0.5 ** 3)
    assert by_id[id(grid.head.weight)] == 1e-3


def test_grid_head_reads_every_patch_token_in_order(example: ModuleType) -> None:
    mt.manual_seed(0)
    net = ViT(ViTConfig(**SMALL))  # type: ignore[arg-type]
    grid = example.GridHead(net, 10)
    grid.eval()
    x = mt.randn(3, 1, 12, 12)
    tokens = net.forward_features(x).numpy()[:, 1:].reshape(3, -1)  # (3, 9 * 16)
    assert grid.head.weight.shape == (10, 9 * 16)
    np.testing.assert_allclose(grid(x).numpy(), tokens @ grid.head.weight.numpy().T
                               + grid.head.bias.numpy(), rtol=1e-5, atol=1e-5)


def test_probe_features_and_choices_on_validation(example: ModuleType) -> None:
    mt.manual_seed(0)
    net = ViT(ViTConfig(**SMALL))  # type: ignore[arg-type]
    data = tiny_data()
    feats = example.features(net, data["train"][0])
    assert {k: v.shape for k, v in feats.items()} == {
        "cls": (40, 16), "mean": (40, 16), "blocks": (40, 3 * 16), "tokens": (40, 9 * 16)}
    r = example.probe(net, data, list(example.POOLS))
    assert set(r["by_pool"]) == set(example.POOLS)
    assert r["val"] == max(v for v, _ in r["by_pool"].values())
    assert r["by_pool"][r["choice"]["pool"]] == [r["val"], r["test"]]


def test_finetune_keeps_each_settings_best_and_picks_on_validation(
        example: ModuleType) -> None:
    a = argparse.Namespace(lrs=[1e-3], ft_pools=["mean", "tokens"], layer_decays=[1.0, 0.5],
                           ft_steps=4, eval_every=2, warmup=2)
    r = example.finetune(lambda: ViT(ViTConfig(**SMALL)), tiny_data(), 0, a)  # type: ignore[arg-type]
    assert len(r["by_setting"]) == 4
    assert r["val"] == max(v for _, v, _ in r["by_setting"])
    assert [r["choice"], r["val"], r["test"]] in r["by_setting"]
    assert r["choice"]["step"] in (2, 4)
