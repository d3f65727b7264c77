"""Vision Transformer (Dosovitskiy et al., arXiv:2010.11929): images cut into patches, each
patch a token, pre-LN transformer blocks, a class token or mean pooling, a linear head.

    net = ViT(ViTConfig.named("vit-mini"))      # 28x28 grey images, 16 patches of 7x7
    logits = net(x)                              # (N, num_classes)
    z = net.features(x)                          # (N, embed_dim) pooled embedding
    net.reset_classifier(5)                      # a new `head` for transfer

Parameter names are timm's `VisionTransformer` (`patch_embed.proj.weight`, `cls_token`,
`pos_embed`, `blocks.0.attn.qkv.weight`, `blocks.0.mlp.fc1.weight`, `norm`, `head`), so a
timm state dict of the same shape loads key by key. Two differences from timm: the final
`norm` is applied before pooling in both pooling modes (timm swaps it for an `fc_norm` after
mean pooling), and the patch embedding is computed as patchify + one matrix product with the
flattened conv kernel, which equals the stride = kernel = patch convolution.

`patch_tokens` and `encode` split the forward pass where MAE (arXiv:2111.06377) needs it:
between embedding every patch and running the blocks on the visible ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl.creation import zeros
from minitl.models.configs import ViTConfig
from minitl.ops.movement import cat
from minitl.tensor import Tensor

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed", "ViT", "ViTConfig", "patchify",
           "unpatchify"]


def patchify(x: Any, patch: int) -> Any:
    """(B, C, H, W) images -> (B, H/p * W/p, C * p * p) patches, row-major over the patch
    grid, each patch flattened in (C, p, p) order: the order of a Conv2d kernel's weights.
    Takes and returns numpy arrays or Tensors."""
    B, C, H, W = x.shape
    gh, gw = H // patch, W // patch
    x = x.reshape(B, C, gh, patch, gw, patch)
    x = x.transpose(0, 2, 4, 1, 3, 5) if isinstance(x, np.ndarray) else \
        x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, gh * gw, C * patch * patch)


def unpatchify(p: Any, patch: int, channels: int) -> Any:
    """The inverse of `patchify` for square images: (B, N, C*p*p) -> (B, C, H, W)."""
    B, N, _ = p.shape
    g = round(N ** 0.5)
    x = p.reshape(B, g, g, channels, patch, patch)
    x = x.transpose(0, 3, 1, 4, 2, 5) if isinstance(x, np.ndarray) else \
        x.permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, p, gw, p)
    return x.reshape(B, channels, g * patch, g * patch)


class PatchEmbed(nn.Module):
    """Each p x p patch -> one D-dimensional token by a shared linear map (`proj`, stored as
    a Conv2d of kernel = stride = p so its weights are timm's).

    Shape:
        - Input: (N, in_channels, image_size, image_size)
        - Output: (N, num_patches, D)
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int,
                 embed_dim: int) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)

    def check(self, x: Tensor) -> None:
        """ValueError naming what is wrong with an input batch, before any arithmetic."""
        s, p = self.image_size, self.patch_size
        if x.ndim != 4:
            raise ValueError(f"ViT expects an (N, C, H, W) batch of images, got shape "
                             f"{tuple(x.shape)}")
        _, C, H, W = x.shape
        if C != self.in_channels:
            raise ValueError(f"ViT expects {self.in_channels} channel(s), got {C} (input shape "
                             f"{tuple(x.shape)})")
        if H % p or W % p:
            raise ValueError(f"ViT: image size {H}x{W} is not divisible by the patch size {p}")
        if (H, W) != (s, s):
            raise ValueError(f"ViT was built for {s}x{s} images (its pos_embed has "
                             f"{self.num_patches} patch positions), got {H}x{W}")

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        w = self.proj.weight  # (D, C, p, p)
        # A stride-p conv with a p x p kernel sees each patch exactly once: one GEMM.
        return F.linear(patchify(x, self.patch_size), w.reshape(w.shape[0], -1), self.proj.bias)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, patch_size={self.patch_size}"


class Attention(nn.Module):
    """Multi-head self-attention with timm's names: a fused `qkv` Linear (D -> 3D, rows q, k,
    v) and the output projection `proj`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        H, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, T, hd)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, T, D)))


class Mlp(nn.Module):
    """fc2(gelu(fc1(x))), the exact (erf) GELU as in timm."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True,
                 dropout: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_vit_weights(module: nn.Module, std: float) -> None:
    """timm's ViT init: truncated normal for every Linear and the patch projection, zero
    biases, LayerNorms at the identity."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ViT(nn.Module):
    """Patch embedding + class token + learned positions, `depth` pre-LN blocks, a final
    LayerNorm, pooling (class token or mean of the patch tokens) and a linear `head`.

    Shape:
        - Input: (N, in_channels, image_size, image_size)
        - Output: (N, num_classes); `features`: (N, embed_dim);
          `forward_features`: (N, 1 + num_patches, embed_dim)
    """

    def __init__(self, config: ViTConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = config or ViTConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config = c = config
        D = c.embed_dim
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_channels, D)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(zeros(1, 1, D))
        self.pos_embed = nn.Parameter(zeros(1, 1 + self.num_patches, D))  # row 0: cls token
        self.pos_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([Block(D, c.num_heads, c.mlp_dim, c.qkv_bias, c.dropout,
                                           c.layer_norm_eps) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(D, eps=c.layer_norm_eps)
        self.head = nn.Linear(D, c.num_classes)
        self.feature_dim = D
        init_vit_weights(self, c.initializer_range)
        std = c.initializer_range
        nn.init.trunc_normal_(self.pos_embed, std=std, a=-2 * std, b=2 * std)
        nn.init.normal_(self.cls_token, std=1e-6)  # timm: the class token starts near zero

    def patch_tokens(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, num_patches, D) patch embeddings with their positions added."""
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def encode(self, tokens: Tensor) -> Tensor:
        """Prepend the class token to (N, K, D) patch tokens (any K of them, positions
        already added) and run the blocks and the final norm: (N, 1 + K, D)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], 1, -1)
        x = self.pos_drop(cat([cls, tokens], dim=1))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encode(self.patch_tokens(x))  # (N, 1 + num_patches, D)

    def forward_blocks(self, x: Tensor) -> list[Tensor]:
        """Every block's output, (N, 1 + num_patches, D) each, the last one after the final
        norm (it equals `forward_features`): the intermediate features a probe may read."""
        tokens = self.patch_tokens(x)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], 1, -1)
        h = self.pos_drop(cat([cls, tokens], dim=1))
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        outs[-1] = self.norm(h)
        return outs

    def pool(self, h: Tensor) -> Tensor:
        """(N, 1 + K, D) encoder output -> (N, D) by the configured pooling."""
        return h[:, 0] if self.config.pool == "cls" else h[:, 1:].mean(1)

    def features(self, x: Tensor) -> Tensor:
        """The pooled embedding (N, embed_dim) that `head` reads: the transfer interface."""
        return self.pool(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, num_classes)

    def reset_classifier(self, num_classes: int) -> nn.Linear:
        """Replace `head` by a freshly initialised (embed_dim -> num_classes) Linear for a new
        task (timm's name); `config.num_classes` follows, so a saved config rebuilds it."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"reset_classifier: num_classes must be an integer >= 1, got "
                             f"{num_classes!r}")
        head = nn.Linear(self.feature_dim, num_classes)
        init_vit_weights(head, self.config.initializer_range)
        self.head = head
        self.config = self.config.replace(num_classes=num_classes)
        return head
