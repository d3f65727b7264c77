"""nn utilities: gradient clipping (implemented in `minitl.optim.clip`), activation
checkpointing (`minitl.nn.utils.checkpoint.checkpoint`) and a model summary (`summary`)."""

from minitl.nn.utils.summary import ModelSummary, summary
from minitl.optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["ModelSummary", "clip_grad_norm_", "clip_grad_value_", "summary"]
