"""nn utilities: gradient clipping (implemented in `minitl.optim.clip`) and activation
checkpointing (`minitl.nn.utils.checkpoint.checkpoint`)."""

from minitl.optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
