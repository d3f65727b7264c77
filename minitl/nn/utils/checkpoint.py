"""Activation checkpointing: `checkpoint(fn, *args)` keeps only fn's inputs from the forward
pass and runs fn again during backward to rebuild what its gradient needs.

    h = checkpoint(layer, h, cos, sin)      # as torch.utils.checkpoint.checkpoint

A 30-layer decoder trained on (8, 128) tokens otherwise holds every layer's intermediate
arrays (projections, attention probabilities, MLP activations) until backward; with each
layer checkpointed it holds one (B, T, D) input per layer plus one layer's intermediates at a
time, for one extra forward pass of compute (Chen et al. 2016, arXiv:1604.06174).

fn must be deterministic given its inputs and minitl's random generator: the generator's state
is saved before the first run and restored for the second, so dropout draws the same mask,
and left where the first run put it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minitl import autograd_state
from minitl.creation import default_generator
from minitl.function import Context, Function
from minitl.tensor import Tensor

__all__ = ["checkpoint"]


class _Checkpoint(Function):
    """Inputs: the function, its argument count n, its n arguments, then the parameters it
    uses that require grad. The parameters are inputs only so that the call is recorded in
    the graph when they are the only thing that trains (a frozen embedding feeding a LoRA
    layer); their gradients arrive through the inner backward, so theirs here are None."""

    @staticmethod
    def forward(ctx: Context, fn: Callable[..., Tensor], n: int, *raw: Any,
                tensor_at: tuple[int, ...], grad_at: tuple[bool, ...]) -> Any:
        ctx.rng_state = default_generator().bit_generator.state
        ctx.fn_, ctx.tensor_at, ctx.grad_at, ctx.n_params = fn, tensor_at, grad_at, len(raw) - n
        ctx.save_for_backward(*raw[:n])
        with autograd_state.no_grad():
            out = fn(*_rebuild(raw[:n], tensor_at, grad_at, requires_grad=False))
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: the function must return one Tensor, got "
                            f"{type(out).__name__}")
        return out.data

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        rng = default_generator().bit_generator
        after = rng.state
        rng.state = ctx.rng_state  # the same dropout masks as the first run
        try:
            with autograd_state.enable_grad():
                inputs = _rebuild(ctx.saved, ctx.tensor_at, ctx.grad_at, requires_grad=True)
                out = ctx.fn_(*inputs)
        finally:
            rng.state = after
        if out.requires_grad:  # parameters inside fn get their .grad here
            out.backward(Tensor._wrap(grad))
        grads = [x.grad.data if isinstance(x, Tensor) and x.requires_grad and x.grad is not None
                 else None for x in inputs]
        return (None, None, *grads, *([None] * ctx.n_params))


def _rebuild(raw: tuple[Any, ...], tensor_at: tuple[int, ...], grad_at: tuple[bool, ...],
             requires_grad: bool) -> list[Any]:
    """fn's arguments again: the arrays that were Tensors wrapped as fresh leaves."""
    out = list(raw)
    for i, g in zip(tensor_at, grad_at):
        out[i] = Tensor._wrap(raw[i], requires_grad=requires_grad and g)
    return out


def _trainable_parameters(function: Callable[..., Any]) -> list[Tensor]:
    """The parameters requiring grad of a Module, or of the Module a bound method belongs to."""
    from minitl.nn.module import Module

    owner = function if isinstance(function, Module) else getattr(function, "__self__", None)
    if not isinstance(owner, Module):
        return []
    return [p for p in owner.parameters() if p.requires_grad]


def checkpoint(function: Callable[..., Tensor], *args: Any, use_reentrant: bool | None = None,
               preserve_rng_state: bool = True) -> Tensor:
    """`function(*args)` with its intermediate arrays dropped after the forward pass and
    recomputed in backward. Tensor arguments and the parameters used inside `function` get
    their gradients as without checkpointing; other arguments are passed through unchanged.
    Under no_grad it is a plain call.

    `function` is a Module, a bound method of one, or any callable whose trainable tensors
    all come in through `args`: the parameters that train are found through the Module, so
    a lambda closing over a trainable parameter would leave it without a gradient when no
    argument requires grad. `use_reentrant` is accepted for PyTorch's signature and ignored;
    `preserve_rng_state=False` is not supported (the generator is always replayed).
    """
    if not preserve_rng_state:
        raise NotImplementedError("checkpoint: preserve_rng_state=False is not supported")
    if not callable(function):
        raise TypeError(f"checkpoint: expected a callable, got {type(function).__name__}")
    if not autograd_state.is_grad_enabled():
        return function(*args)
    tensor_at = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor))
    grad_at = tuple(args[i].requires_grad for i in tensor_at)
    params = _trainable_parameters(function)
    if not tensor_at and not params:
        return function(*args)
    return _Checkpoint.apply(function, len(args), *args, *params, tensor_at=tensor_at,
                             grad_at=grad_at)
