"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 decay.

Computes exactly what `torch.optim.SGD` (single-tensor path) computes, in the same
order, so float64 trajectories agree to rounding:

    g = -grad if maximize else grad
    g = g + weight_decay * p                       (if weight_decay != 0)
    b = g  (first step)  |  b = momentum * b + (1 - dampening) * g
    g = g + momentum * b  (nesterov)  |  g = b     (if momentum != 0)
    p = p - lr * g

Nesterov momentum: Sutskever et al. 2013, in the form PyTorch uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minitl.autograd_state import bump_version
from minitl.backend import array_module
from minitl.optim.optimizer import Optimizer, ParamsT, check_nonnegative


class SGD(Optimizer):
    """`SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
    maximize=False)`; state per parameter: `momentum_buffer` (when momentum != 0)."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)

    @staticmethod
    def _check_hparams(h: dict[str, Any]) -> None:
        check_nonnegative("learning rate", h["lr"])
        check_nonnegative("momentum", h["momentum"])
        check_nonnegative("weight_decay", h["weight_decay"])
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening, got "
                             f"momentum={h['momentum']}, dampening={h['dampening']}")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                param = p.data  # updated in place: every Tensor sharing this array sees it
                grad = p.grad.data
                # Out-of-place from here on: p.grad itself is never modified.
                if group["maximize"]:
                    grad = -grad
                if weight_decay != 0:
                    grad = grad + weight_decay * param
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        # xp.array, not grad.copy(): arithmetic on a 0-d array returns a
                        # scalar, and the buffer must stay an array to be updated in place.
                        buf = array_module(param).array(grad, copy=True)
                        state["momentum_buffer"] = buf
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * grad
                    grad = grad + momentum * buf if group["nesterov"] else buf
                param -= lr * grad
                bump_version(param)  # a graph still holding p for backward must notice
        return loss
