"""ResNet-style CNN with basic blocks (He et al., arXiv:1512.03385).

    net = ResNet(ResNetConfig.named("resnet-mini"))     # 28x28 grey images, 10 classes
    logits = net(x)                                      # (N, num_classes)
    z = net.features(x)                                  # (N, widths[-1]) pooled embedding

Module names are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`,
`fc`), so `ResNetConfig.named("resnet18")` takes a torchvision resnet18 state dict key by
key. For transfer, replace `fc` (`net.fc = nn.Linear(net.feature_dim, k)`) or train a head
on `features(x)`.
"""

from __future__ import annotations

from minitl import nn
from minitl.models.configs import ResNetConfig
from minitl.tensor import Tensor

__all__ = ["BasicBlock", "ResNet", "ResNetConfig"]


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convolutions.

    The shortcut is the identity, or a strided 1x1 conv + BatchNorm (`downsample`) when
    the block changes the resolution or the width.

    Shape:
        - Input: (N, in_planes, H, W)
        - Output: (N, planes, ceil(H / stride), ceil(W / stride))
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps, momentum=momentum)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps, momentum=momentum)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=eps, momentum=momentum))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H', W')
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, `len(widths)` stages of basic blocks, global average pooling and `fc`.

    Stage i has `depths[i]` blocks of `widths[i]` channels; every stage after the first
    halves the resolution in its first block.

    Shape:
        - Input: (N, in_channels, H, W)
        - Output: (N, num_classes); `features`: (N, widths[-1])
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        eps, mom = config.bn_eps, config.bn_momentum
        w0 = config.widths[0]
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_channels, w0, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, w0, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()  # small images: keep the resolution
        self.bn1 = nn.BatchNorm2d(w0, eps=eps, momentum=mom)
        self.relu = nn.ReLU()
        in_planes = w0
        for i, (width, depth) in enumerate(zip(config.widths, config.depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, width, stride, eps, mom))
                in_planes = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, config.num_classes)
        self.feature_dim = in_planes
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for ReLU nets (fan_out, as torchvision); BatchNorm starts as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The stages `layer1`, `layer2`, ... in order (e.g. for gradual unfreezing)."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.widths))]

    def features(self, x: Tensor) -> Tensor:
        """The pooled embedding (N, widths[-1]) that `fc` reads: the transfer interface."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, w0, H', W')
        for stage in self.stages:
            x = stage(x)
        return self.avgpool(x).flatten(1)  # (N, C)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))  # (N, num_classes)
