"""`gradcheck`: the engine's Jacobians against central differences (torch.autograd.gradcheck).

For every output o and every differentiable input x it builds two Jacobians of shape
(o.numel(), x.numel()):
    analytic[i, :]  = the gradient of o.flat[i] w.r.t. x, one `grad()` call per row;
    numerical[:, j] = (f(x + eps e_j) - f(x - eps e_j)).flat / (2 eps), two forward calls.
They must agree elementwise within |a - n| <= atol + rtol |n|. Central differences have
error O(eps^2) plus rounding O(ulp / eps), so the check is meaningful only in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from minitl.autograd_state import no_grad
from minitl.tensor import Tensor

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(RuntimeError):
    """Raised by gradcheck when analytic and numerical gradients disagree."""


def _tensors(x: Any) -> list[Tensor]:
    items = x if isinstance(x, (tuple, list)) else (x,)
    return [t for t in items if isinstance(t, Tensor)]


def _outputs(func: Callable[..., Any], inputs: tuple[Any, ...]) -> list[Tensor]:
    return [o for o in _tensors(func(*inputs)) if o.dtype.kind == "f"]


def _numerical(func: Callable[..., Any], inputs: tuple[Any, ...], x: Tensor,
               n_out: list[int], eps: float) -> list[np.ndarray]:
    """One (o.numel(), x.numel()) Jacobian per output, by perturbing x's storage in place
    (every element restored bit for bit afterwards)."""
    jac = [np.zeros((n, x.numel())) for n in n_out]
    data = x.data
    with no_grad():
        for j, idx in enumerate(np.ndindex(*x.shape)):
            old = data[idx].copy()
            data[idx] = old + eps
            up = [np.asarray(o.numpy(), dtype=np.float64).reshape(-1)
                  for o in _outputs(func, inputs)]
            data[idx] = old - eps
            down = [np.asarray(o.numpy(), dtype=np.float64).reshape(-1)
                    for o in _outputs(func, inputs)]
            data[idx] = old
            for k, (u, d) in enumerate(zip(up, down)):
                jac[k][:, j] = (u - d) / (2 * eps)
    return jac


def gradcheck(func: Callable[..., Any], inputs: Any, *, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True) -> bool:
    """Check the gradients of `func(*inputs)` w.r.t. every input with requires_grad=True.

    Args:
        func: takes the inputs, returns a Tensor or a tuple of Tensors.
        inputs: a Tensor or a tuple of them (non-Tensors are passed through); the ones to
            check need requires_grad=True and should be float64.
        eps: the finite-difference step.
        atol, rtol: the tolerance, |analytic - numerical| <= atol + rtol |numerical|.
        raise_exception: raise GradcheckError on a mismatch (default) rather than return
            False.

    Returns:
        True when every Jacobian matches.
    """
    from minitl.autograd import grad

    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    checked = [(i, a) for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if not checked:
        raise ValueError("gradcheck expects at least one input tensor to require gradient")
    for i, a in checked:
        if a.dtype != np.float64:
            warnings.warn(f"gradcheck: input {i} requires gradient and is {a.dtype}, not "
                          f"float64; the check will likely fail", stacklevel=2)
    outs = _outputs(func, args)
    sizes = [o.numel() for o in outs]
    wrt = [a for _, a in checked]
    # analytic[c][k]: the Jacobian of output k w.r.t. checked input c, one grad() per row
    analytic = [[np.zeros((n, a.numel())) for n in sizes] for a in wrt]
    for k, o in enumerate(outs):
        if not o.requires_grad:  # an output that does not depend on any input: zero rows
            continue
        for r in range(o.numel()):
            seed = np.zeros(o.numel(), dtype=o.dtype)
            seed[r] = 1
            gs = grad(o, wrt, Tensor._wrap(seed.reshape(o.shape)), retain_graph=True,
                      allow_unused=True)
            for c, g in enumerate(gs):
                if g is not None:
                    analytic[c][k][r] = np.asarray(g.numpy(), dtype=np.float64).reshape(-1)
    for c, (i, a) in enumerate(checked):
        for k, numerical in enumerate(_numerical(func, args, a, sizes, eps)):
            ana = analytic[c][k]
            excess = np.abs(ana - numerical) - (atol + rtol * np.abs(numerical))
            excess = np.where(np.isnan(excess), np.inf, excess)  # NaN on either side fails
            if excess.size == 0 or excess.max() <= 0:
                continue
            if not raise_exception:
                return False
            row, col = np.unravel_index(np.argmax(excess), excess.shape)
            raise GradcheckError(
                f"Jacobian mismatch for output {k} with respect to input {i}: worst at output "
                f"element {row}, input element {col}: numerical {numerical[row, col]:.8g} vs "
                f"analytical {ana[row, col]:.8g} (|diff| "
                f"{abs(ana[row, col] - numerical[row, col]):.3g}, allowed "
                f"{atol + rtol * abs(numerical[row, col]):.3g}); {int((excess > 0).sum())} of "
                f"{excess.size} entries out of tolerance"
            )
    return True
