"""Pretraining objectives: masked and causal language modelling, supervised classification,
contrastive learning (SimCLR with NT-Xent), masked autoencoding of image patches (MAE), and
`ObjectiveTrainer`, the Trainer that computes its loss with one of them.

NT-Xent itself is a loss (`minitl.nn.functional.nt_xent`) and the image augmentations live
with the data (`minitl.data.augment`); both are re-exported here for older imports.
"""

from minitl.data.augment import (
    ImageAugment,
    cutout,
    gaussian_noise,
    horizontal_flip,
    random_crop,
    random_erasing,
    two_views,
)
from minitl.ops.loss import NTXent, nt_xent
from minitl.pretrain.mae import (
    MaskedAutoencoder,
    PatchMask,
    mae_loss,
    patch_targets,
    random_masking,
)
from minitl.pretrain.objectives import (
    MLMCollator,
    ObjectiveTrainer,
    SimCLR,
    causal_lm_objective,
    causal_lm_shift,
    classification_loss,
    contrastive_objective,
    mask_tokens,
    masked_lm_objective,
    supervised_objective,
)

__all__ = [
    "ImageAugment", "MLMCollator", "MaskedAutoencoder", "NTXent", "ObjectiveTrainer",
    "PatchMask", "SimCLR", "causal_lm_objective", "causal_lm_shift", "classification_loss",
    "contrastive_objective", "cutout", "gaussian_noise", "horizontal_flip", "mae_loss",
    "mask_tokens", "masked_lm_objective", "nt_xent", "patch_targets", "random_crop",
    "random_erasing", "random_masking", "supervised_objective", "two_views",
]
