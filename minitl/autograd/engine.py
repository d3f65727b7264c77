"""The backward engine: one pass over the graph in reverse topological order.

`run_backward(roots, grads, retain_graph, inputs)` serves both entry points:
- `Tensor.backward()` (inputs=None): each leaf that requires grad gets its gradient added to
  `.grad` (then its post-accumulate-grad hooks run), and so does each non-leaf that called
  `retain_grad()`;
- `mt.autograd.grad()` (inputs given): the gradients of `inputs` are returned and no `.grad`
  anywhere is touched.

A tensor's gradient is complete when the walk reaches it, because the order puts every
tensor after all tensors computed from it; so an input's gradient is read off at that moment
(leaf or not), without a second pass.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from minitl import autograd_state
from minitl.function import unbroadcast
from minitl.tensor import Tensor
from minitl.types import Array

# References to a gradient accumulate_grad may keep: its own name and sys.getrefcount's
# argument (plus run_backward's local when astype returned the same array). The count is
# checked on CPython up to 3.13 (tests/test_grad_ownership.py); 3.14 counts some stack
# references differently, and there every first gradient is copied.
_HANDED_OVER_REFS = 2
STEALS_GRADIENTS = sys.implementation.name == "cpython" and sys.version_info < (3, 14)


def _held_by_the_pass_alone(a: Array, refs: int) -> bool:
    """No reference to `a` but the `refs` counted by the caller (plus this call's), and its
    memory its own: either it owns its buffer, or it is a reshape of a whole buffer that
    nothing else holds (kernels return (M, N) arrays that ops reshape to their output)."""
    if not getattr(a.flags, "writeable", True) or sys.getrefcount(a) > refs:
        return False
    if a.base is None:
        return True
    # two references to the base: the view's and getrefcount's argument
    return (type(a.base) is type(a) and a.base.base is None and a.base.size == a.size
            and a.base.dtype == a.dtype and sys.getrefcount(a.base) <= 2)


def accumulate_grad(t: Tensor, g: Array) -> None:
    """t.grad += g, atomically: backward passes in other threads may add to the same leaf,
    and an unlocked read-modify-write would drop one of the two contributions. A new array
    each time, never an in-place add, so a `.grad` someone holds does not change under them.

    A first gradient that nothing else holds (no other reference; its own buffer, or a reshape
    of a whole buffer nobody else holds) becomes `.grad` as it is, as PyTorch steals a
    gradient it owns alone; any other is copied, so `.grad` never shares memory with another
    tensor's gradient or with an array the caller passed in."""
    own = g.astype(t.dtype, copy=False)
    refs = _HANDED_OVER_REFS + (own is g)
    del g
    with autograd_state.grad_accumulation_lock:
        prev = t._grad
        if prev is not None:
            t._grad = Tensor._wrap(prev.data + own)
        elif STEALS_GRADIENTS and _held_by_the_pass_alone(own, refs + 1):
            t._grad = Tensor._wrap(own)
        else:
            t._grad = Tensor._wrap(own.copy())


def topological_order(roots: Sequence[Tensor]) -> list[Tensor]:
    """Tensors reachable from `roots`, each after every tensor that depends on it."""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is not None:
            for _, parent in ctx.parents:
                if parent._requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    order.reverse()
    return order


def run_backward(roots: Sequence[Tensor], root_grads: Sequence[Array], retain_graph: bool,
                 inputs: Sequence[Tensor] | None = None) -> list[Array | None] | None:
    """Propagate `root_grads` from `roots` to the leaves. With `inputs`, return the gradient
    of each input (None where it was not reached) instead of accumulating into `.grad`."""
    grads: dict[int, Array] = {}
    for root, g in zip(roots, root_grads, strict=True):
        key = id(root)
        grads[key] = g if key not in grads else grads[key] + g
    wanted: dict[int, Array | None] | None = None
    if inputs is not None:
        wanted = {id(t): None for t in inputs}
    version_now = autograd_state.storage_version
    for node in topological_order(roots):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        ctx = node._ctx
        if wanted is not None:
            if id(node) in wanted:
                wanted[id(node)] = g
        elif (ctx is None or node._retains_grad) and node._requires_grad:
            accumulate_grad(node, g)
            if ctx is None and node._post_accumulate_grad_hooks:
                for hook in list(node._post_accumulate_grad_hooks.values()):
                    hook(node)
        if ctx is None:  # a leaf
            continue
        if ctx.released:
            raise RuntimeError(
                "backward(): trying to backward through the graph a second time; "
                "pass retain_graph=True to the first backward() call"
            )
        for _, key, version in ctx.saved_versions:  # one counter compare per saved array
            if version_now(key, 0) != version:
                ctx.check_saved_versions()  # raises, naming the op and the versions
        in_grads = ctx.fn.backward(ctx, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        for (pos, parent), shape in zip(ctx.parents, ctx.input_shapes):
            if not parent._requires_grad or pos >= len(in_grads):
                continue
            pg = in_grads[pos]
            if pg is None:
                continue
            pg = unbroadcast(ctx.xp, pg, shape)
            key = id(parent)
            prev = grads.get(key)
            grads[key] = pg if prev is None else prev + pg
        # drop this frame's references to the gradients just handed on, so a leaf's one can be
        # seen to be held by the pass alone (accumulate_grad then keeps it without a copy)
        in_grads = pg = prev = None  # type: ignore[assignment]
        if not retain_graph:
            ctx.release()
    if wanted is None or inputs is None:
        return None
    return [wanted[id(t)] for t in inputs]
