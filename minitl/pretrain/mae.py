"""Masked autoencoders (He et al., arXiv:2111.06377): hide most patches of each image, encode
the visible ones, and ask a light decoder to paint the pixels of the hidden ones back.

    mae = MaskedAutoencoder(ViT(ViTConfig.named("vit-mini")))
    loss, pred, mask = mae(x)          # x (B, C, H, W); 75% of each image's patches hidden
    loss.backward()
    mae.encoder                        # the ViT to transfer (its `head` is not trained)

Three choices carry the paper's result and are kept here:
- the encoder sees the visible patches only (no mask tokens), so at 75% masking it does a
  quarter of the work, and there is no [MASK] token whose absence at transfer time would
  shift the input distribution;
- the decoder is narrow and shallow and owns its position embedding; the mask token enters
  only there, placed back at each hidden patch's position;
- the loss is the mean squared error over the hidden patches only, optionally against pixels
  normalised per patch (mean 0, variance 1), which the paper found gives better features.

Masks are drawn per image, as an argsort of uniform noise, from a numpy Generator: pass
`rng`, or leave it None for `minitl.creation.defaultas_generator()` (the stream
`mt.manual_seed` seeds and Trainer checkpoints save).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from minitl import nn
from minitl.creation import zeros
from minitl.data.augment import RngLike, as_generator
from minitl.models.vit import Block, ViT, init_vit_weights, patchify
from minitl.ops.movement import cat
from minitl.tensor import Tensor

__all__ = ["MaskedAutoencoder", "PatchMask", "mae_loss", "patch_targets", "random_masking"]


class PatchMask(NamedTuple):
    """Which patches each image keeps (one draw of `random_masking`)."""

    ids_keep: np.ndarray  # (B, K) int64: the visible patches, in the order they are encoded
    ids_restore: np.ndarray  # (B, N) int64: position of patch n in [visible..., hidden...]
    mask: np.ndarray  # (B, N) float32: 1 for a hidden patch (scored), 0 for a visible one


def random_masking(batch: int, num_patches: int, mask_ratio: float = 0.75,
                   rng: RngLike = None) -> PatchMask:
    """Hide int(N * mask_ratio) patches of each of `batch` images, chosen independently per
    image (the same count for all, so visible tokens stack into one (B, K, D) batch)."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    keep = int(num_patches * (1.0 - mask_ratio))
    if keep < 1 or keep >= num_patches:
        raise ValueError(f"mask_ratio {mask_ratio} keeps {keep} of {num_patches} patches; "
                         "at least one must stay visible and one be hidden")
    noise = as_generator(rng).random((batch, num_patches))
    shuffle = np.argsort(noise, axis=1, kind="stable")  # (B, N): first `keep` stay visible
    restore = np.argsort(shuffle, axis=1, kind="stable")
    mask = np.ones((batch, num_patches), np.float32)
    mask[:, :keep] = 0.0
    mask = np.take_along_axis(mask, restore, axis=1)  # back to patch order
    return PatchMask(shuffle[:, :keep].astype(np.int64), restore.astype(np.int64), mask)


def patch_targets(images: Any, patch: int, norm_pix: bool = True, eps: float = 1e-6
                  ) -> np.ndarray:
    """(B, C, H, W) images -> (B, N, C*p*p) regression targets, each patch normalised to
    mean 0 and variance 1 when `norm_pix` (MAE's default for its best features)."""
    x = images.numpy() if isinstance(images, Tensor) else np.asarray(images)
    t = patchify(x, patch)
    if norm_pix:
        mean, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
        t = (t - mean) / np.sqrt(var + eps)
    return t.astype(x.dtype, copy=False)


def mae_loss(pred: Tensor, target: Any, mask: Any) -> Tensor:
    """Mean over hidden patches of the per-patch mean squared error:
    sum_bn mask_bn * mean_j (pred_bnj - target_bnj)^2 / sum_bn mask_bn.
    Visible patches (mask 0) contribute nothing, to the value or the gradient."""
    target = target if isinstance(target, Tensor) else Tensor(np.asarray(target, pred.dtype))
    m = mask.numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if pred.shape != target.shape or pred.shape[:2] != m.shape:
        raise ValueError(f"mae_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} "
                         f"and mask {m.shape} must agree as (B, N, P), (B, N, P), (B, N)")
    hidden = float(m.sum())
    if hidden == 0:
        raise ValueError("mae_loss: the mask hides no patch, there is nothing to score")
    per_patch = ((pred - target) ** 2).mean(-1)  # (B, N)
    return (per_patch * Tensor(m.astype(per_patch.dtype))).sum() / hidden


def _gather_tokens(x: Tensor, ids: np.ndarray) -> Tensor:
    """x[b, ids[b, k], :] for every b, k: (B, N, D) -> (B, K, D), differentiable."""
    index = np.repeat(ids[:, :, None], x.shape[-1], axis=2)
    return x.gather(1, Tensor(index))


class MaskedAutoencoder(nn.Module):
    """A ViT encoder run on the visible patches + a light transformer decoder that predicts
    the pixels of every patch; names as in the MAE reference (`decoder_embed`, `mask_token`,
    `decoder_pos_embed`, `decoder_blocks`, `decoder_norm`, `decoder_pred`).

    Args:
        encoder: the ViT to pretrain (its `head` takes no part).
        decoder_dim: width of the decoder (the paper: 512 for a 1024-wide encoder).
        decoder_depth: decoder blocks (1-2 suffice at this scale; the paper uses 8).
        decoder_heads: attention heads of the decoder.
        mask_ratio: share of each image's patches hidden (0.75 in the paper).
        norm_pix_loss: regress per-patch normalised pixels.

    Shape:
        - Input: (B, C, H, W)
        - Output: (loss (), pred (B, N, C*p*p), mask (B, N) numpy, 1 = hidden)
    """

    def __init__(self, encoder: ViT, decoder_dim: int = 32, decoder_depth: int = 1,
                 decoder_heads: int = 2, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True) -> None:
        super().__init__()
        c = encoder.config
        self.encoder = encoder
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        random_masking(1, encoder.num_patches, mask_ratio, rng=0)  # a bad ratio fails here
        self.decoder_embed = nn.Linear(c.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(zeros(1, 1 + encoder.num_patches, decoder_dim))
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_dim, decoder_heads, int(decoder_dim * c.mlp_ratio), True, 0.0,
                  c.layer_norm_eps) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=c.layer_norm_eps)
        self.decoder_pred = nn.Linear(decoder_dim, c.patch_size ** 2 * c.in_channels)
        std = c.initializer_range
        for part in (self.decoder_embed, self.decoder_blocks, self.decoder_norm,
                     self.decoder_pred):
            init_vit_weights(part, std)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=std, a=-2 * std, b=2 * std)
        nn.init.normal_(self.mask_token, std=std)

    def forward_encoder(self, x: Tensor, masking: PatchMask) -> Tensor:
        tokens = self.encoder.patch_tokens(x)  # (B, N, D), positions added before dropping
        return self.encoder.encode(_gather_tokens(tokens, masking.ids_keep))  # (B, 1+K, D)

    def forward_decoder(self, latent: Tensor, masking: PatchMask) -> Tensor:
        y = self.decoder_embed(latent)  # (B, 1+K, Dd)
        B, n = masking.ids_restore.shape
        hidden = self.mask_token.expand(B, n - (y.shape[1] - 1), -1)  # (B, N-K, Dd)
        seq = _gather_tokens(cat([y[:, 1:], hidden], dim=1), masking.ids_restore)  # (B, N, Dd)
        y = cat([y[:, :1], seq], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            y = block(y)
        return self.decoder_pred(self.decoder_norm(y))[:, 1:]  # (B, N, p*p*C)

    def forward(self, x: Tensor, masking: PatchMask | None = None,
                rng: RngLike = None) -> tuple[Tensor, Tensor, np.ndarray]:
        """Loss, per-patch pixel predictions and the mask; a fresh mask is drawn from `rng`
        unless `masking` is given."""
        self.encoder.patch_embed.check(x)
        if masking is None:
            masking = random_masking(x.shape[0], self.encoder.num_patches, self.mask_ratio, rng)
        pred = self.forward_decoder(self.forward_encoder(x, masking), masking)
        target = patch_targets(x, self.encoder.config.patch_size, self.norm_pix_loss)
        return mae_loss(pred, target, masking.mask), pred, masking.mask
