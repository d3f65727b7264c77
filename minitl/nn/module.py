"""Module: the base class of every layer and model (PyTorch's `torch.nn.Module` semantics).

A Module owns three ordered registries filled by `__setattr__`: `_parameters`, `_buffers`
(state that is not trained: running statistics, masks) and `_modules` (children). The rest
of the API walks them: `named_parameters`, `state_dict`, `to`, `train`, `apply`. Names and
order match PyTorch, so state dicts move between the two frameworks key by key.

`load_state_dict` checks everything first (missing, unexpected and mis-shaped keys) and
copies only when the whole dict is acceptable, into the existing arrays, so optimizers
holding the parameters keep working.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

import numpy as np

from minitl.autograd_state import increment_version
from minitl.backend import array_module
from minitl.nn.parameter import Parameter
from minitl.tensor import Device, Tensor

__all__ = ["Module", "RemovableHandle"]


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """A hint when every missing key is present under one extra prefix ('' if none)."""
    first = missing[0]
    for key in unexpected:
        if key.endswith("." + first):
            prefix = key[: -len(first)]
            if all(prefix + k in unexpected for k in missing):
                where = (" (the layout of a minitl training checkpoint: "
                         "minitl.train.model_state_dict(path) reads its model part)"
                         if prefix == "model." else "")
                return (f"Every missing key is present with the prefix {prefix!r}: strip it"
                        f"{where}.")
    return ""


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """`load_state_dict`'s result: (missing_keys, unexpected_keys), both lists of names."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class RemovableHandle:
    """Returned by `register_forward_hook`; `.remove()` unregisters the hook."""

    _next_id = itertools.count()

    def __init__(self, hooks: dict[int, Callable[..., Any]]) -> None:
        self.hooks = hooks
        self.id = next(RemovableHandle._next_id)

    def remove(self) -> None:
        self.hooks.pop(self.id, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _addindent(s: str, num_spaces: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    first = lines.pop(0)
    return first + "\n" + "\n".join(" " * num_spaces + line for line in lines)


def _join(prefix: str, name: str) -> str:
    return prefix + ("." if prefix else "") + name


class Module:
    """Base class for all neural network modules.

    Subclasses call `super().__init__()` first, then assign Parameters, Modules
    and buffers as attributes, and define `forward`. Call the module, not
    `forward`, so that hooks run.
    """

    training: bool
    _parameters: dict[str, Parameter | None]
    _buffers: dict[str, Tensor | None]
    _modules: dict[str, Module | None]

    def __init__(self) -> None:
        # object.__setattr__: our own __setattr__ needs these dicts to exist already.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function')

    # ---- calling and hooks -----------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for hook in list(self._forward_pre_hooks.values()):
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """`hook(module, args) -> None | new args`, run before `forward`."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """`hook(module, args, output) -> None | new output`, run after `forward`.

        The usual way to pull intermediate features out of a pretrained network.
        """
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ---- registration ----------------------------------------------------------------

    def _check_name(self, name: Any, kind: str, registry: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f'{kind} name can\'t contain "." or be empty, got: "{name}"')
        if hasattr(self, name) and name not in self.__dict__[registry]:
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder, e.g. a disabled bias) under `name`."""
        self._check_name(name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (minitl.nn.Parameter or None required)")
        if param is not None and not param.is_leaf:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'; "
                             "build it from a detached tensor")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: state that moves with `to()` and (if persistent) is saved in
        `state_dict`, but is not returned by `parameters()`."""
        self._check_name(name, "buffer", "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer "
                            f"'{name}' (minitl Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module under `name` (also reachable as an attribute)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module", "_modules")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign '{name}' before Module.__init__() call")
            object.__setattr__(self, name, value)
        elif isinstance(value, (Parameter, Module)):
            # A name lives in one registry at a time: re-using it moves it. Its own
            # registry keeps the entry, so a replaced child keeps its position.
            own = self._parameters if isinstance(value, Parameter) else self._modules
            for d in (self.__dict__, self._parameters, self._buffers, self._modules):
                if d is not own:
                    d.pop(name, None)
            self._non_persistent_buffers_set.discard(name)
            if isinstance(value, Parameter):
                self.register_parameter(name, value)
            else:
                self._modules[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "child module"
                raise TypeError(f"cannot assign '{type(value).__name__}' as {kind} '{name}' "
                                f"({'minitl.nn.Parameter' if kind == 'parameter' else 'Module'}"
                                " or None expected)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered state.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        keys = list(super().__dir__())
        keys += list(self._parameters) + list(self._buffers) + list(self._modules)
        # Children of containers are named "0", "1", ...: not attributes one can type.
        return sorted(k for k in set(keys) if not k[0].isdigit())

    # ---- traversal -------------------------------------------------------------------

    def _named_members(self, members: Callable[[Module], Any], prefix: str, recurse: bool,
                       remove_duplicate: bool) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        for module_prefix, module in modules:
            for name, value in members(module):
                if value is None or id(value) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield _join(module_prefix, name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs; a Parameter shared by several modules (tied weights)
        is listed once, under the first name it is reached by."""
        yield from self._named_members(lambda m: m._parameters.items(), prefix, recurse,
                                       remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (v for _, v in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members(lambda m: m._buffers.items(), prefix, recurse,
                                       remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (v for _, v in self.named_buffers(recurse=recurse))

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """(qualified name, Module) for this module and every descendant, depth first."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        if remove_duplicate:
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, _join(prefix, name), remove_duplicate)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def get_submodule(self, target: str) -> Module:
        """The descendant at dotted path `target` ("" is self), e.g. "encoder.layer.0"."""
        if target == "":
            return self
        mod: Module = self
        for item in target.split("."):
            if item not in mod._modules or mod._modules[item] is None:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{item}`")
            mod = mod._modules[item]  # type: ignore[assignment]
        return mod

    def _get_registered(self, target: str, registry: str, what: str) -> Any:
        module_path, _, name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        value = getattr(mod, registry).get(name)
        if value is None:
            raise AttributeError(f"{type(mod).__name__} has no {what} `{name}`")
        return value

    def get_parameter(self, target: str) -> Parameter:
        """The parameter at dotted path `target`, e.g. "encoder.layer.0.weight"."""
        return self._get_registered(target, "_parameters", "parameter")

    def get_buffer(self, target: str) -> Tensor:
        return self._get_registered(target, "_buffers", "buffer")

    # ---- modes and bulk changes --------------------------------------------------------

    def train(self, mode: bool = True) -> Self:
        """Set training mode (Dropout active, BatchNorm uses batch statistics) recursively."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")  # noqa: TRY004 (torch)
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Self:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Self:
        """Freeze (False) or unfreeze (True) every parameter."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (`set_to_none`, the default) or fill it with zeros in place
        through `zero_()`, which bumps its version counter as Optimizer.zero_grad does."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def apply(self, fn: Callable[[Module], Any]) -> Self:
        """Call `fn` on every submodule (children first, then self); e.g. custom init."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def _apply(self, fn: Callable[[Any], Any]) -> Self:
        """Replace the array of every parameter, gradient and buffer by `fn(array)`, keeping
        the Tensor objects (optimizers hold references to them)."""
        for module in self.modules():
            for t in (*module._parameters.values(), *module._buffers.values()):
                if t is not None:
                    t.data = fn(t.data)
                    if t.grad is not None:
                        t.grad.data = fn(t.grad.data)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Self:
        """`to(device)`, `to(dtype)`, `to(device, dtype)` or `to(tensor)`, in place.

        A dtype applies to floating point parameters and buffers only: integer buffers
        such as `num_batches_tracked` keep their dtype, as in PyTorch.
        """
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            elif isinstance(a, str):
                device = a
            else:
                dtype = a
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind not in "fc":
                raise TypeError(f"Module.to only accepts floating point dtypes, got {dtype}")

        def convert(arr: Any) -> Any:
            if dtype is not None and arr.dtype.kind in "fc":
                arr = arr.astype(dtype, copy=False)
            if device is not None and Device(str(device)).type != Tensor._wrap(arr).device.type:
                arr = Tensor._wrap(arr).to(str(device)).data
            return arr

        return self._apply(convert)

    def float(self) -> Self:
        return self.to(np.float32)

    def double(self) -> Self:
        return self.to(np.float64)

    def half(self) -> Self:
        return self.to(np.float16)

    def cpu(self) -> Self:
        return self.to("cpu")

    def cuda(self) -> Self:
        return self.to("cuda")

    # ---- state dicts -----------------------------------------------------------------

    def state_dict(self, destination: OrderedDict[str, Tensor] | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by qualified name, in PyTorch's order: each
        module's own parameters, then its buffers, then its children's entries.

        Values are detached Tensors sharing memory with the module (the live
        Parameters with `keep_vars=True`). Tied weights appear under every name.
        """
        out: OrderedDict[str, Tensor] = OrderedDict() if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                out[prefix + name] = b if keep_vars else b.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=out, prefix=prefix + name + ".",
                                  keep_vars=keep_vars)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> _IncompatibleKeys:
        """Copy `state_dict` values (Tensors or numpy arrays) into this module, in place.

        Values are cast to each target's dtype and copied into its existing array, so
        optimizers that hold the parameters keep working.

        Args:
            state_dict: name -> Tensor / numpy array, e.g. from `state_dict()` or `mt.load`.
            strict: raise if keys are missing or unexpected. Shape mismatches always raise.

        Returns:
            A named tuple `(missing_keys, unexpected_keys)`.

        Raises:
            RuntimeError: listing every problem at once; nothing is copied when it raises.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        targets = self.state_dict(keep_vars=True)
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        mismatched: list[str] = []
        sources: dict[str, Any] = {}
        for key in (k for k in targets if k in state_dict):
            target, value = targets[key], state_dict[key]
            if isinstance(value, Tensor) and value.device.type != target.device.type:
                value = value.to(target.device)
            arr = value.data if isinstance(value, Tensor) else value
            if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
                arr = np.asarray(arr)
            if tuple(arr.shape) != target.shape:
                mismatched.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(arr.shape)} "
                    f"from checkpoint, the shape in current model is {target.shape}.")
                continue
            sources[key] = arr
        errors = [f"{what} key(s) in state_dict: " + ", ".join(f'"{k}"' for k in keys) + ". "
                  for what, keys in (("Unexpected", unexpected), ("Missing", missing))
                  if strict and keys] + mismatched
        if strict and missing and unexpected:
            errors.append(_prefix_hint(missing, unexpected))
        errors = [e for e in errors if e]
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for key, arr in sources.items():
            target = targets[key]
            xp = array_module(target.data)
            target.data[...] = xp.asarray(arr).astype(target.dtype, copy=False)
            increment_version(target)  # an in-place write, like copy_
        return _IncompatibleKeys(missing, unexpected)

    # ---- printing --------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The text inside `Name(...)`: the layer's configuration. Override in layers."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({key}): " + _addindent(repr(module), 2)
                       for key, module in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                body = extra_lines[0]
            else:
                body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"
