"""ResNet: shapes, BatchNorm train/eval behaviour, parity with a plain-torch ResNet of the same
names (torchvision's), and gradients reaching every parameter."""

from __future__ import annotations

import numpy as np
import pytest

import minitl as mt
from minitl.models import ResNet, ResNetConfig

torch = pytest.importorskip("torch")
tnn = torch.nn

TINY = {"widths": (4, 8), "depths": (1, 2), "num_classes": 5}


class TorchBlock(tnn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                             tnn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(tnn.Module):
    """torchvision's ResNet with BasicBlock, written out, for a `ResNetConfig`."""

    def __init__(self, c: ResNetConfig) -> None:
        super().__init__()
        w0 = c.widths[0]
        if c.stem == "imagenet":
            self.conv1 = tnn.Conv2d(c.in_channels, w0, 7, 2, 3, bias=False)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = tnn.Conv2d(c.in_channels, w0, 3, 1, 1, bias=False)
            self.maxpool = tnn.Identity()
        self.bn1 = tnn.BatchNorm2d(w0)
        self.relu = tnn.ReLU()
        cin = w0
        for i, (w, d) in enumerate(zip(c.widths, c.depths)):
            blocks = []
            for j in range(d):
                blocks.append(TorchBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
            self.add_module(f"layer{i + 1}", tnn.Sequential(*blocks))
        self.n = len(c.widths)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(cin, c.num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def twin(cfg: ResNetConfig) -> tuple[ResNet, TorchResNet]:
    model = ResNet(cfg)
    rng = np.random.default_rng(0)
    for name, b in model.named_buffers():  # non-trivial running statistics
        if name.endswith("running_mean"):
            b.data[...] = rng.normal(0, 0.1, b.shape)
        elif name.endswith("running_var"):
            b.data[...] = rng.uniform(0.5, 1.5, b.shape)
    for name, p in model.named_parameters():
        if ".bn" in name or name.startswith("bn") or "downsample.1" in name:
            p.data[...] += rng.normal(0, 0.1, p.shape).astype(np.float32)
    ref = TorchResNet(cfg)
    ref.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                         for k, v in model.state_dict().items()})
    return model, ref


def images(n: int = 4, c: int = 1, hw: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c, hw, hw)).astype(np.float32)


def test_shapes_and_named_sizes() -> None:
    model = ResNet(ResNetConfig.named("resnet-mini"))
    x = mt.tensor(images(2, 1, 28))
    assert model(x).shape == (2, 10)
    assert model.features(x).shape == (2, 64) and model.feature_dim == 64
    assert [len(s) for s in model.stages] == [2, 2, 2]
    assert "layer2.0.downsample.0.weight" in model.state_dict()
    assert "layer1.0.downsample.0.weight" not in model.state_dict()
    rgb = ResNet(ResNetConfig(in_channels=3, stem="imagenet", widths=(4, 8), depths=(1, 1)))
    assert rgb(mt.tensor(images(2, 3, 32))).shape == (2, 10)
    with pytest.raises(ValueError, match="same length"):
        ResNetConfig(widths=(8, 16), depths=(1,))


@pytest.mark.parametrize("stem,channels,hw", [("small", 1, 12), ("imagenet", 3, 20)])
def test_logits_match_torch_in_eval_and_train(stem: str, channels: int, hw: int) -> None:
    cfg = ResNetConfig(**TINY, stem=stem, in_channels=channels)
    model, ref = twin(cfg)
    x = images(4, channels, hw)
    with torch.no_grad():
        np.testing.assert_allclose(model.eval()(mt.tensor(x)).numpy(),
                                   ref.eval()(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(model.train()(mt.tensor(x)).numpy(),
                                   ref.train()(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)
    # running statistics moved the same way
    theirs = ref.state_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v.numpy(), theirs[k].numpy(), atol=1e-5, err_msg=k)


def test_gradients_match_torch_and_reach_every_parameter() -> None:
    cfg = ResNetConfig(**TINY)
    model, ref = twin(cfg)
    x = images()
    y = np.array([0, 1, 2, 3])
    mt.nn.functional.cross_entropy(model(mt.tensor(x)), mt.tensor(y)).backward()
    torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    theirs = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).max() > 0, name
        np.testing.assert_allclose(p.grad.numpy(), theirs[name].grad.numpy(), atol=1e-4,
                                   rtol=1e-3, err_msg=name)


def test_batchnorm_train_vs_eval() -> None:
    model = ResNet(ResNetConfig(**TINY))
    x = mt.tensor(images(6))
    model.eval()
    before = model.bn1.running_mean.numpy().copy()
    e1 = model(x).numpy()
    # eval: running statistics, untouched; each sample independent of the batch
    np.testing.assert_array_equal(model.bn1.running_mean.numpy(), before)
    np.testing.assert_allclose(model(x[:1]).numpy(), e1[:1], atol=1e-5)
    model.train()
    t1 = model(x).numpy()
    assert int(model.bn1.num_batches_tracked.item()) == 1
    assert not np.allclose(model.bn1.running_mean.numpy(), before)
    assert not np.allclose(t1, e1, atol=1e-3)
    # train: batch statistics, so one sample's output depends on the others
    assert not np.allclose(model(x[:3]).numpy()[:1], t1[:1], atol=1e-4)


def test_zero_init_residual_makes_blocks_start_as_identity() -> None:
    model = ResNet(ResNetConfig(**TINY, zero_init_residual=True)).eval()
    block = model.layer1[0]
    assert np.all(block.bn2.weight.numpy() == 0)
    x = mt.tensor(np.abs(images(2, 4, 6)))  # non-negative: relu(0 + x) == x
    np.testing.assert_allclose(block(x).numpy(), x.numpy(), atol=1e-6)


def test_features_feed_a_new_head_for_transfer() -> None:
    model = ResNet(ResNetConfig(**TINY))
    model.fc = mt.nn.Linear(model.feature_dim, 3)
    out = model(mt.tensor(images(2)))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert model.fc.weight.grad is not None and model.conv1.weight.grad is not None
