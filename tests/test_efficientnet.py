"""EfficientNet-Lite0: TF-SAME geometry, checkpoint names, parity with a PyTorch
re-implementation of the same forward pass (synthetic weights, fast), transfer hooks (new
head, LoRA on the 1x1 convs, gradients), and, marked slow, the published ImageNet weights
on scikit-learn's two sample photos.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from minitl import transfer as tl
from minitl.models.efficientnet import (
    LITE0_STAGES,
    EfficientNetLite0,
    EfficientNetLiteConfig,
    SamePad2d,
    checkpoint_key,
    preprocess,
    resize_bilinear,
    same_padding,
)

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # torch is only in the test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

# ImageNet-1k indices (torchvision's category list) of the classes checked below.
IMAGENET = {442: "bell cote", 663: "monastery", 698: "palace", 975: "lakeside", 985: "daisy",
            947: "mushroom", 108: "sea anemone"}


# ---- a PyTorch re-implementation of the forward pass, on checkpoint-named tensors -------

def torch_same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    def pads(n: int) -> tuple[int, int]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    (top, bottom), (left, right) = pads(x.shape[2]), pads(x.shape[3])
    return TF.pad(x, (left, right, top, bottom))


def torch_forward(sd: dict[str, torch.Tensor], x: torch.Tensor,
                  stages=LITE0_STAGES, eps: float = 1e-3) -> torch.Tensor:
    def bn(h: torch.Tensor, pre: str) -> torch.Tensor:
        return TF.batch_norm(h, sd[pre + ".running_mean"], sd[pre + ".running_var"],
                             sd[pre + ".weight"], sd[pre + ".bias"], False, 0.0, eps)

    def relu6(h: torch.Tensor) -> torch.Tensor:
        return TF.hardtanh(h, 0.0, 6.0)

    h = relu6(bn(TF.conv2d(torch_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    i = 0
    for expand, k, s, _, repeats in stages:
        for j in range(repeats):
            stride, pre, inp = (s if j == 0 else 1), f"_blocks.{i}.", h
            if expand != 1:
                h = relu6(bn(TF.conv2d(h, sd[pre + "_expand_conv.weight"]), pre + "_bn0"))
            h = TF.conv2d(torch_same_pad(h, k, stride), sd[pre + "_depthwise_conv.weight"],
                          stride=stride, groups=h.shape[1])
            h = relu6(bn(h, pre + "_bn1"))
            h = bn(TF.conv2d(h, sd[pre + "_project_conv.weight"]), pre + "_bn2")
            if stride == 1 and inp.shape[1] == h.shape[1]:
                h = h + inp
            i += 1
    h = relu6(bn(TF.conv2d(h, sd["_conv_head.weight"]), "_bn1"))
    return TF.linear(h.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def to_checkpoint_name(ours: str) -> str:
    """Inverse of checkpoint_key for our names (test-side, written independently)."""
    if ours.startswith("classifier."):
        return "_fc." + ours[len("classifier."):]
    *modules, leaf = ours.split(".")
    return ".".join([p if p.isdigit() else "_" + p for p in modules] + [leaf])


def synthetic_state(seed: int = 0, num_classes: int = 1000) -> dict[str, np.ndarray]:
    """Checkpoint-named random weights whose BatchNorms are far from the identity."""
    rng = np.random.default_rng(seed)
    model = EfficientNetLite0(num_classes=num_classes)
    out = {}
    for name, t in model.state_dict().items():
        shape = t.shape
        if name.endswith("num_batches_tracked"):
            arr = np.array(1000, dtype=np.int64)
        elif name.endswith("running_var"):
            arr = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(("running_mean", ".bias")):
            arr = rng.normal(0, 0.1, shape)
        elif name.endswith(("bn0.weight", "bn1.weight", "bn2.weight")):
            arr = rng.uniform(0.5, 1.5, shape)
        else:  # conv / linear weights: He-scaled so activations stay O(1) through 16 blocks
            fan_in = int(np.prod(shape[1:]))
            arr = rng.normal(0, math.sqrt(1.0 / fan_in), shape)
        out[to_checkpoint_name(name)] = np.asarray(arr, dtype=t.numpy().dtype)
    return out


# ---- geometry ---------------------------------------------------------------------------

@pytest.mark.parametrize("size,k,s,want", [
    (224, 3, 2, (0, 1)), (112, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (28, 5, 2, (1, 2)),
    (14, 5, 1, (2, 2)), (1, 3, 2, (1, 1)), (5, 5, 2, (2, 2)),
])
def test_same_padding_matches_tf(size: int, k: int, s: int, want: tuple[int, int]) -> None:
    assert same_padding(size, k, s) == want
    lo, hi = want
    assert (size + lo + hi - k) // s + 1 == math.ceil(size / s)


def test_same_pad_module_output_size() -> None:
    x = mt.randn(1, 2, 9, 12)
    pad, conv = SamePad2d(5, 2), nn.Conv2d(2, 2, 5, 2)
    assert conv(pad(x)).shape == (1, 2, 5, 6)


def test_layout_parameter_count_and_names() -> None:
    net = EfficientNetLite0()
    assert len(net.blocks) == sum(s[4] for s in LITE0_STAGES) == 16
    n = sum(int(np.prod(p.shape)) for p in net.parameters())
    assert n == 4_652_008  # the published 4.65M
    assert net.blocks[0].expand == 1 and not hasattr(net.blocks[0], "expand_conv")
    assert net.blocks[3].depthwise_conv.kernel_size == (5, 5)
    assert net.blocks[3].depthwise_conv.groups == 144
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert checkpoint_key("_blocks.12._depthwise_conv.weight") == \
        "blocks.12.depthwise_conv.weight"
    assert checkpoint_key("_fc.weight") == "classifier.weight"
    assert checkpoint_key("_bn1.running_var") == "bn1.running_var"
    for name in net.state_dict():  # ours map to themselves; theirs round-trip
        assert checkpoint_key(name) == name
        assert checkpoint_key(to_checkpoint_name(name)) == name


@pytest.mark.parametrize("hw", [(64, 64), (57, 43)])
def test_shapes_and_features(hw: tuple[int, int]) -> None:
    net = EfficientNetLite0(num_classes=7).eval()
    x = mt.randn(2, 3, *hw)
    with mt.no_grad():
        fmap = net.feature_map(x)
        assert fmap.shape == (2, 1280, math.ceil(hw[0] / 32), math.ceil(hw[1] / 32))
        assert net.features(x).shape == (2, 1280)
        assert net(x).shape == (2, 7)


# ---- parity with PyTorch ------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("hw", [(64, 64), (45, 71)])
def test_forward_matches_torch(hw: tuple[int, int]) -> None:
    sd = synthetic_state()
    net = EfficientNetLite0.from_pretrained(sd)
    x = np.random.default_rng(1).normal(0, 1, (2, 3, *hw)).astype(np.float32)
    with mt.no_grad():
        ours = net(mt.tensor(x)).numpy()
    with torch.no_grad():
        theirs = torch_forward({k: torch.from_numpy(v) for k, v in sd.items()},
                               torch.from_numpy(x)).numpy()
    assert np.abs(theirs).max() > 0.1  # not a trivially small signal
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


@needs_torch
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_from_pretrained_reads_a_torch_file(tmp_path: Path, legacy: bool) -> None:
    sd = synthetic_state(seed=2)
    path = tmp_path / "lite0.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path,
               _use_new_zipfile_serialization=not legacy)
    net, report = EfficientNetLite0.from_pretrained(path, output_loading_info=True)
    assert len(report.loaded) == 296 and not report.missing and not report.unexpected
    assert not net.training
    np.testing.assert_array_equal(net.blocks[5].depthwise_conv.weight.numpy(),
                                  sd["_blocks.5._depthwise_conv.weight"])


def test_new_head_keeps_the_backbone() -> None:
    sd = synthetic_state(seed=3)
    net, report = EfficientNetLite0.from_pretrained(sd, num_classes=10,
                                                    output_loading_info=True)
    assert net.classifier.weight.shape == (10, 1280)
    assert sorted(report.initialized) == ["classifier.bias", "classifier.weight"]
    np.testing.assert_array_equal(net.conv_head.weight.numpy(), sd["_conv_head.weight"])
    with pytest.raises(RuntimeError, match="missing"):
        EfficientNetLite0.from_pretrained({k: v for k, v in sd.items()
                                           if "_blocks.4." not in k})


# ---- transfer hooks -----------------------------------------------------------------------

def test_training_step_reaches_every_parameter() -> None:
    net = EfficientNetLite0(EfficientNetLiteConfig(num_classes=3, drop_connect_rate=0.5))
    net.train()
    x, y = mt.randn(4, 3, 32, 32), mt.tensor(np.array([0, 1, 2, 0]))
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), name


def test_lora_on_pointwise_convs_starts_equal_to_the_base() -> None:
    net = EfficientNetLite0(num_classes=5).eval()
    x = mt.randn(1, 3, 40, 40)
    with mt.no_grad():
        before = net(x).numpy()
    tl.apply_lora(net, tl.LoRAConfig(r=4, alpha=8, target=("*.expand_conv", "*.project_conv"),
                                     modules_to_save=("classifier",)))
    with mt.no_grad():
        after = net(x).numpy()
    np.testing.assert_allclose(after, before, atol=1e-5)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("classifier.") for n in trainable)
    assert any(n.startswith("blocks.15.project_conv.lora_A") for n in trainable)


def test_layerwise_lr_groups_rank_the_blocks() -> None:
    net = EfficientNetLite0(num_classes=5)
    groups = tl.layerwise_lr_groups(net, lr=1e-2, decay=0.5, head_patterns=("classifier.*",))
    by_name = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert by_name["classifier.weight"] == by_name["blocks.15.project_conv.weight"] == 1e-2
    assert by_name["blocks.14.project_conv.weight"] == 5e-3
    assert by_name["conv_stem.weight"] < by_name["blocks.0.project_conv.weight"]


# ---- input pipeline -----------------------------------------------------------------------

def test_preprocess_normalises_crops_and_replicates_grey() -> None:
    img = np.full((30, 50, 3), 255, dtype=np.uint8)
    x = preprocess(img, size=16)
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x.numpy(), (255 - 127) / 128)
    grey = np.zeros((2, 28, 28), dtype=np.uint8)
    assert preprocess(grey, size=32, crop=1.0).shape == (2, 3, 32, 32)
    assert np.allclose(preprocess(grey, size=32).numpy(), -127 / 128)
    with pytest.raises(ValueError):
        preprocess(np.zeros((2, 4, 4, 2)))


@needs_torch
def test_resize_bilinear_matches_torch_interpolate() -> None:
    x = np.random.default_rng(0).uniform(0, 255, (2, 37, 23, 3)).astype(np.float32)
    for size in [(16, 16), (50, 41), (37, 23)]:
        ours = resize_bilinear(x, size)
        theirs = TF.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size,
                                mode="bilinear", align_corners=False, antialias=False)
        np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-3)


# ---- the published weights on two real photos (downloads 17 MB + 13 MB once) ------------

def _sample_images() -> list[np.ndarray]:
    """scikit-learn's two sample photos (sklearn.datasets.load_sample_images)."""
    from PIL import Image

    from minitl import assets

    root = assets.path("sklearn-sample-images")
    return [np.asarray(Image.open(root / f).convert("RGB")) for f in ("china.jpg", "flower.jpg")]


@pytest.mark.slow
def test_imagenet_predictions_on_sample_photos() -> None:
    pytest.importorskip("PIL")
    images = _sample_images()
    net = EfficientNetLite0.from_pretrained()
    x = preprocess(images)
    with mt.no_grad():
        logits = net(x).numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert IMAGENET[top5[0, 0]] == "palace"  # china.jpg: the Summer Palace
    assert {663, 442} <= set(top5[0].tolist())  # monastery, bell cote
    assert IMAGENET[top5[1, 0]] == "daisy"  # flower.jpg
    if torch is not None:
        from minitl.io.torch_pickle import load_torch
        from minitl.models.efficientnet import weights_path

        ours = load_torch(weights_path())
        ref = torch.load(weights_path(), weights_only=True)  # torch's own restricted loader
        assert list(ours) == list(ref)
        assert all(np.array_equal(ours[k], v.numpy()) for k, v in ref.items())
        sd = {k: torch.from_numpy(v) for k, v in ours.items()}
        with torch.no_grad():
            ref = torch_forward(sd, torch.from_numpy(x.numpy())).numpy()
        np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=1e-4)
