"""ViT and MAE: parity of logits and gradients with a plain-torch ViT of the same (timm) names,
the patch embedding against a real strided convolution, input errors, the classifier swap for
transfer, and the MAE invariants (only hidden patches are scored; masks per image, of the
asked ratio, reproducible from mt.manual_seed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl.models import ViT, ViTConfig
from minitl.models.vit import patchify, unpatchify
from minitl.pretrain import MaskedAutoencoder, mae_loss, patch_targets, random_masking

SMALL = {"image_size": 12, "patch_size": 4, "in_channels": 2, "num_classes": 5,
         "embed_dim": 16, "depth": 2, "num_heads": 2}


def small_vit(**changes: object) -> ViT:
    return ViT(ViTConfig(**{**SMALL, **changes}))  # type: ignore[arg-type]


def torch_vit(torch: object, cfg: ViTConfig) -> object:
    """The same architecture written in plain torch, parameter names as timm's."""
    import torch.nn as tnn

    class Attn(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = tnn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
            self.proj = tnn.Linear(cfg.embed_dim, cfg.embed_dim)

        def forward(self, x):  # type: ignore[no-untyped-def]
            B, T, D = x.shape
            H = cfg.num_heads
            q, k, v = self.qkv(x).reshape(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            w = (q @ k.transpose(-2, -1) / math.sqrt(D // H)).softmax(-1)
            return self.proj((w @ v).transpose(1, 2).reshape(B, T, D))

    class Mlp(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = tnn.Linear(cfg.embed_dim, cfg.mlp_dim)
            self.fc2 = tnn.Linear(cfg.mlp_dim, cfg.embed_dim)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc2(tnn.functional.gelu(self.fc1(x)))

    class Blk(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = tnn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
            self.attn = Attn()
            self.norm2 = tnn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
            self.mlp = Mlp()

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = tnn.Conv2d(cfg.in_channels, cfg.embed_dim, cfg.patch_size,
                                   stride=cfg.patch_size)

    class Net(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = PatchEmbed()
            self.cls_token = tnn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
            self.pos_embed = tnn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.embed_dim))
            self.blocks = tnn.ModuleList([Blk() for _ in range(cfg.depth)])
            self.norm = tnn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
            self.head = tnn.Linear(cfg.embed_dim, cfg.num_classes)

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return self.head(x[:, 0] if cfg.pool == "cls" else x[:, 1:].mean(1))

    return Net().double()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_logits_and_gradients_equal_a_torch_vit_with_the_same_weights(pool: str) -> None:
    torch = pytest.importorskip("torch")
    mt.manual_seed(0)
    net = small_vit(pool=pool)
    # Spread the init so every term matters (zero biases and a near-zero class token would
    # let a wrong bias or class-token path pass).
    rng = np.random.default_rng(1)
    for p in net.parameters():
        p.data[...] = rng.normal(0, 0.3, p.shape).astype(np.float32)
    ref = torch_vit(torch, net.config)
    state = {k: torch.from_numpy(v.numpy().astype(np.float64)) for k, v in
             net.state_dict().items()}
    ref.load_state_dict(state, strict=True)
    assert set(state) == set(ref.state_dict())  # the same names, none missing or extra

    x = rng.normal(size=(3, 2, 12, 12)).astype(np.float32)
    y = np.array([0, 4, 2])
    logits = net(mt.tensor(x))
    F.cross_entropy(logits, mt.tensor(y)).backward()
    ref_logits = ref(torch.from_numpy(x.astype(np.float64)))
    torch.nn.functional.cross_entropy(ref_logits, torch.from_numpy(y)).backward()

    np.testing.assert_allclose(logits.numpy(), ref_logits.detach().numpy(), rtol=1e-4, atol=1e-4)
    grads = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        g = grads[name].grad.numpy()
        assert p.grad is not None and np.abs(g).max() > 0, name
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-3, atol=1e-4 * np.abs(g).max(),
                                   err_msg=name)


def test_patch_embedding_equals_the_strided_convolution() -> None:
    mt.manual_seed(0)
    net = small_vit()
    x = mt.randn(2, 2, 12, 12)
    conv = net.patch_embed.proj(x)  # (2, D, 3, 3) through the real Conv2d
    want = conv.numpy().reshape(2, 16, 9).transpose(0, 2, 1)
    np.testing.assert_allclose(net.patch_embed(x).numpy(), want, rtol=1e-5, atol=1e-5)
    p = patchify(x.numpy(), 4)
    assert p.shape == (2, 9, 32)
    np.testing.assert_array_equal(unpatchify(p, 4, 2), x.numpy())
    np.testing.assert_array_equal(patchify(x, 4).numpy(), p)  # Tensor path, same order


def test_names_shapes_and_named_sizes() -> None:
    mt.manual_seed(0)
    for name in ViTConfig.sizes():
        cfg = ViTConfig.named(name)
        net = ViT(cfg)
        out = net(mt.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size))
        assert out.shape == (2, cfg.num_classes)
        assert net.pos_embed.shape == (1, cfg.num_patches + 1, cfg.embed_dim)
    keys = set(small_vit().state_dict())
    for key in ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed",
                "blocks.1.norm1.weight", "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.bias",
                "blocks.1.norm2.bias", "blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.bias",
                "norm.weight", "head.weight", "head.bias"):
        assert key in keys


def test_bad_inputs_and_configs_fail_with_clear_messages() -> None:
    net = small_vit()
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        net(mt.randn(1, 2, 14, 14))
    with pytest.raises(ValueError, match="expects 2 channel"):
        net(mt.randn(1, 3, 12, 12))
    with pytest.raises(ValueError, match="built for 12x12"):
        net(mt.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        net(mt.randn(2, 12, 12))
    with pytest.raises(ValueError, match="image_size 30 is not a multiple of patch_size 7"):
        ViTConfig(image_size=30, patch_size=7)
    with pytest.raises(ValueError, match="embed_dim 30 is not a multiple of num_heads 4"):
        ViTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="pool"):
        ViTConfig(pool="max")
    with pytest.raises(KeyError, match="vit-mini"):
        ViTConfig.named("vit-huge")


def test_reset_classifier_swaps_only_the_head_for_transfer() -> None:
    mt.manual_seed(0)
    net = small_vit()
    x = mt.randn(4, 2, 12, 12)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    feats = net.features(x).numpy()
    head = net.reset_classifier(3)
    assert net.head is head and net(x).shape == (4, 3) and net.config.num_classes == 3
    np.testing.assert_array_equal(net.features(x).numpy(), feats)
    after = net.state_dict()
    assert all(np.array_equal(after[k].numpy(), v) for k, v in before.items()
               if not k.startswith("head."))
    np.testing.assert_allclose(net(x).numpy(), feats @ head.weight.numpy().T
                               + head.bias.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        net.reset_classifier(0)
    ViT(net.config).load_state_dict(net.state_dict())  # the saved config rebuilds it


def test_forward_blocks_ends_in_forward_features_and_follows_each_block() -> None:
    mt.manual_seed(0)
    net = small_vit()
    net.eval()
    x = mt.randn(3, 2, 12, 12)
    outs = net.forward_blocks(x)
    assert len(outs) == len(net.blocks)
    assert all(o.shape == (3, 1 + net.num_patches, net.config.embed_dim) for o in outs)
    np.testing.assert_allclose(outs[-1].numpy(), net.forward_features(x).numpy(),
                               rtol=1e-6, atol=1e-6)
    # The last block run on the one before it gives the last output, before the final norm.
    np.testing.assert_allclose(net.norm(net.blocks[-1](outs[-2])).numpy(), outs[-1].numpy(),
                               rtol=1e-5, atol=1e-6)


# ---- MAE ---------------------------------------------------------------------------------------

def test_masking_ratio_per_image_randomness_and_reproducibility() -> None:
    mt.manual_seed(3)
    m = random_masking(64, 16, 0.75)
    assert m.ids_keep.shape == (64, 4) and m.mask.shape == (64, 16)
    assert (m.mask.sum(1) == 12).all()  # int(16 * 0.75) hidden in every image
    rows = np.take_along_axis(m.mask, m.ids_keep, 1)
    assert (rows == 0).all()  # kept ids are exactly the unmasked positions
    assert len({tuple(sorted(r)) for r in m.ids_keep}) > 32  # drawn per image, not shared
    freq = m.mask.mean(0)  # no position is favoured (loose: 64 draws per position)
    assert freq.min() > 0.4 and freq.max() < 1.0
    second = random_masking(64, 16, 0.75)
    assert not np.array_equal(second.mask, m.mask)  # the stream advances
    mt.manual_seed(3)
    again = random_masking(64, 16, 0.75)
    np.testing.assert_array_equal(again.ids_keep, m.ids_keep)
    np.testing.assert_array_equal(again.ids_restore, m.ids_restore)
    shuffled = np.concatenate([m.ids_keep, np.zeros((64, 12), np.int64)], 1)
    np.testing.assert_array_equal(np.take_along_axis(shuffled, m.ids_restore, 1)[m.mask == 0],
                                  np.where(m.mask == 0, np.arange(16), 0)[m.mask == 0])
    for bad in (0.0, 1.0, 0.99, -0.1):
        with pytest.raises(ValueError, match="mask_ratio"):
            random_masking(2, 16, bad)


def test_mae_loss_scores_only_hidden_patches() -> None:
    mt.manual_seed(0)
    mae = MaskedAutoencoder(small_vit(), decoder_dim=8, decoder_heads=2)
    x = mt.randn(3, 2, 12, 12)
    masking = random_masking(3, 9, 0.75, rng=0)
    loss, pred, mask = mae(x, masking=masking)
    target = patch_targets(x, 4)
    np.testing.assert_allclose(loss.item(), mae_loss(pred, target, mask).item(), rtol=1e-6)
    visible, hidden = np.argwhere(mask == 0)[0], np.argwhere(mask == 1)[0]
    changed = target.copy()
    changed[visible[0], visible[1]] += 5.0
    assert mae_loss(pred, changed, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    changed = target.copy()
    changed[hidden[0], hidden[1]] += 5.0
    assert mae_loss(pred, changed, mask).item() > loss.item() + 1e-3
    # The gradient reaches the predictions of hidden patches only.
    p = mt.tensor(pred.numpy(), requires_grad=True)
    mae_loss(p, target, mask).backward()
    g = np.abs(p.grad.numpy()).sum(-1)
    assert (g[mask == 0] == 0).all() and (g[mask == 1] > 0).all()
    # Normalised targets: every patch has mean 0 and variance 1.
    np.testing.assert_allclose(target.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(target.var(-1), 1, atol=1e-3)
    with pytest.raises(ValueError, match="hides no patch"):
        mae_loss(pred, target, np.zeros_like(mask))


def test_mae_trains_the_encoder_on_visible_patches_only() -> None:
    mt.manual_seed(0)
    mae = MaskedAutoencoder(small_vit(), decoder_dim=8, decoder_heads=2)
    x = mt.randn(2, 2, 12, 12)
    masking = random_masking(2, 9, 0.75, rng=1)
    latent = mae.forward_encoder(x, masking)
    assert latent.shape == (2, 1 + 2, 16)  # class token + int(9 * 0.25) visible patches
    loss, _, _ = mae(x, masking=masking)
    loss.backward()
    for name, p in mae.named_parameters():
        assert (p.grad is None) == name.startswith("encoder.head."), name
    # A hidden patch's pixels do not reach the encoder: changing them moves only the target.
    hidden = np.argwhere(masking.mask[0] == 1)[0, 0]
    r, c = divmod(int(hidden), 3)
    x2 = x.numpy().copy()
    x2[0, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 3.0
    np.testing.assert_array_equal(mae.forward_encoder(mt.tensor(x2), masking).numpy(),
                                  latent.numpy())
    with pytest.raises(ValueError, match="expects 2 channel"):
        mae(mt.randn(2, 1, 12, 12))
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoder(small_vit(), mask_ratio=0.95)


def test_mae_masks_come_from_the_seeded_generator() -> None:
    x = mt.randn(4, 2, 12, 12)
    runs = []
    for _ in range(2):
        mt.manual_seed(7)
        mae = MaskedAutoencoder(small_vit(), decoder_dim=8, decoder_heads=2)
        runs.append([mae(x)[0].item(), mae(x)[0].item()])
    assert runs[0] == runs[1]  # same seed: same init and masks
    assert runs[0][0] != runs[0][1]  # consecutive batches draw new masks
