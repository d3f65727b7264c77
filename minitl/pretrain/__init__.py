"""Pretraining objectives: masked and causal language modelling, supervised classification,
contrastive learning (NT-Xent) and the image augmentations it needs, and masked autoencoding
of image patches (MAE)."""

from minitl.pretrain.mae import (
                                        MaskedAutoencoder,
                                        PatchMask,
                                        mae_loss,
                                        patch_targets,
                                        random_masking,
)
from minitl.pretrain.objectives import (
                                        ImageAugment,
                                        MLMCollator,
                                        NTXent,
                                        causal_lm_shift,
                                        classification_loss,
                                        cutout,
                                        gaussian_noise,
                                        horizontal_flip,
                                        mask_tokens,
                                        nt_xent,
                                        random_crop,
                                        random_erasing,
                                        two_views,
)

__all__ = [
    "ImageAugment", "MLMCollator", "MaskedAutoencoder", "NTXent", "PatchMask",
    "causal_lm_shift", "classification_loss", "cutout", "gaussian_noise", "horizontal_flip",
    "mae_loss", "mask_tokens", "nt_xent", "patch_targets", "random_crop", "random_erasing",
    "random_masking", "two_views",
]
