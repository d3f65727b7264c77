"""Pretraining objectives: masked and causal language modelling, supervised classification,
contrastive learning (NT-Xent) and the image augmentations it needs."""

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
    "ImageAugment", "MLMCollator", "NTXent", "causal_lm_shift", "classification_loss",
    "cutout", "gaussian_noise", "horizontal_flip", "mask_tokens", "nt_xent", "random_crop",
    "random_erasing", "two_views",
]
