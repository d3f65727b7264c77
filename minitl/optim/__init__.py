"""Optimizers (SGD, Adam, AdamW), learning-rate schedules and gradient clipping.

`minitl.optim.lr_scheduler` is a submodule as in PyTorch; `clip_grad_norm_` is
re-exported by `minitl.nn.utils`.
"""

from minitl.optim import lr_scheduler
from minitl.optim.adam import Adam, AdamW
from minitl.optim.clip import clip_grad_norm_, clip_grad_value_
from minitl.optim.optimizer import Optimizer
from minitl.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "clip_grad_norm_",
           "clip_grad_value_"]
