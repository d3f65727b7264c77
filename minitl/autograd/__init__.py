"""minitl.autograd: the reverse-mode engine's public face, under torch.autograd's names.

`grad(outputs, inputs)` returns d(outputs)/d(inputs) without writing any `.grad`;
`gradcheck(fn, inputs)` compares the engine's Jacobians with central differences;
`Function` is the base class of every op (forward and backward side by side). The engine
itself is `minitl.autograd.engine`; `Tensor.backward()` and `grad()` both call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minitl.autograd.engine import run_backward
from minitl.autograd.gradcheck import GradcheckError, gradcheck
from minitl.autograd_state import enable_grad, inference_mode, no_grad, set_grad_enabled
from minitl.backend import array_module
from minitl.function import Context, Function
from minitl.tensor import Tensor

__all__ = ["Context", "Function", "GradcheckError", "enable_grad", "grad", "gradcheck",
           "inference_mode", "no_grad", "set_grad_enabled"]


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool | None = None,
         materialize_grads: bool = False) -> tuple[Tensor | None, ...]:
    """The sum over `outputs` of grad_output · d output / d input, for each of `inputs`
    (`torch.autograd.grad`). Unlike `backward()`, no tensor's `.grad` changes.

    Args:
        outputs: tensors to differentiate (each must require grad).
        inputs: tensors (leaves or not) whose gradients are returned, in this order.
        grad_outputs: the vector of the vector-Jacobian product, one per output (a Tensor,
            or None for a scalar output, meaning 1).
        retain_graph: keep the graph for another backward; default False (as
            create_graph=False makes it in PyTorch).
        create_graph: differentiating the returned gradients (higher order) is not
            supported: minitl's backward rules compute on arrays, not Tensors.
        allow_unused: return None for an input the outputs do not depend on instead of
            raising (default False).
        materialize_grads: return zeros instead of None for unused inputs (implies
            allow_unused).
    """
    if create_graph:
        raise NotImplementedError("autograd.grad(create_graph=True): minitl's backward rules "
                                  "run on arrays, so gradients cannot be differentiated again")
    if allow_unused is None:
        allow_unused = materialize_grads
    elif materialize_grads and not allow_unused:
        raise ValueError("Expected allow_unused to be True or not passed when "
                         "materialize_grads=True, but got: allow_unused=False.")
    outs, ins = _as_tuple(outputs), _as_tuple(inputs)
    if not ins:
        raise RuntimeError("grad requires non-empty inputs.")
    for i, t in enumerate(ins):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not "
                               f"require grad")
    gouts = (None,) * len(outs) if grad_outputs is None else _as_tuple(grad_outputs)
    if len(gouts) != len(outs):
        raise RuntimeError(f"grad_outputs has {len(gouts)} entries but there are "
                           f"{len(outs)} outputs")
    roots, seeds = [], []
    for i, (o, go) in enumerate(zip(outs, gouts)):
        if not isinstance(o, Tensor) or not o.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not "
                               f"have a grad_fn")
        xp = array_module(o.data)
        if go is None:
            if o.data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs; "
                                   f"output {i} has shape {o.shape}")
            seed = xp.ones_like(o.data)
        else:
            seed = go.data if isinstance(go, Tensor) else xp.asarray(go)
            if tuple(seed.shape) != o.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of "
                                   f"{tuple(seed.shape)} and output[{i}] has a shape of "
                                   f"{o.shape}.")
            seed = seed.astype(o.dtype, copy=False)
        roots.append(o)
        seeds.append(seed)
    found = run_backward(roots, seeds, bool(retain_graph), inputs=ins)
    assert found is not None
    result: list[Tensor | None] = []
    for i, (t, g) in enumerate(zip(ins, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}) appears to "
                                   f"not have been used in the graph. Set allow_unused=True "
                                   f"if this is the desired behavior.")
            result.append(Tensor._wrap(array_module(t.data).zeros_like(t.data))
                          if materialize_grads else None)
        else:
            result.append(Tensor._wrap(g.astype(t.dtype, copy=True)))
    return tuple(result)
