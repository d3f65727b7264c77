"""Adam (arXiv:1412.6980), its AMSGrad variant (Reddi et al. 2018) and AdamW
(decoupled weight decay, arXiv:1711.05101).

Computes what `torch.optim.Adam` / `AdamW` compute on their single-tensor path, in
the same order (the bias corrections are folded into a step size and a denominator
exactly as PyTorch folds them), so float64 trajectories agree to rounding:

    t += 1
    p = p * (1 - lr * wd)                          (AdamW: decoupled decay)
    g = g + wd * p                                 (Adam: L2 decay folded into g)
    m = lerp(m, g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    vmax = max(vmax, v); use vmax for v            (amsgrad)
    denom = sqrt(v) / sqrt(1 - beta2**t) + eps
    p = p - lr / (1 - beta1**t) * m / denom

The update of one parameter is the backend kernel `adamw_step` (numpy reference in
backend/reference.py; on the CPU a numba loop that makes one pass over the parameter, its
gradient and its state instead of a dozen numpy passes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minitl.autograd_state import bump_version
from minitl.backend import array_module, device_of, get_backend
from minitl.optim.optimizer import Optimizer, ParamsT, check_nonnegative, check_unit_interval


class Adam(Optimizer):
    """`Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
    maximize=False, decoupled_weight_decay=False)`.

    State per parameter: `step` (int), `exp_avg`, `exp_avg_sq`, and `max_exp_avg_sq`
    when amsgrad is on.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    @staticmethod
    def _check_hparams(h: dict[str, Any]) -> None:
        check_nonnegative("learning rate", h["lr"])
        check_nonnegative("epsilon", h["eps"])
        betas = h["betas"]
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas} (expected two values)")
        check_unit_interval("beta1", betas[0])
        check_unit_interval("beta2", betas[1])
        check_nonnegative("weight_decay", h["weight_decay"])

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                param = p.data  # updated in place
                grad = p.grad.data
                xp = array_module(param)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = xp.zeros_like(param)
                    state["exp_avg_sq"] = xp.zeros_like(param)
                if group["amsgrad"] and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = xp.zeros_like(param)
                state["step"] += 1
                max_sq = state["max_exp_avg_sq"] if group["amsgrad"] else None
                # The backend that holds param; its adamw_step hands dtypes and layouts it
                # does not take to the reference.
                get_backend(device_of(param)).adamw_step(
                    param, grad, state["exp_avg"], state["exp_avg_sq"], max_sq, state["step"],
                    lr, beta1, beta2, eps, weight_decay, group["decoupled_weight_decay"],
                    group["maximize"])
                bump_version(param)  # a graph still holding p for backward must notice
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay: `p *= 1 - lr * weight_decay` before the Adam
    update instead of adding `weight_decay * p` to the gradient (default 1e-2)."""

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # An AdamW stays AdamW whatever the checkpoint's groups say.
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
