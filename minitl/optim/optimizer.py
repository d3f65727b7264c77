"""The `Optimizer` base class: parameter groups, per-parameter state, and checkpoints.

Follows `torch.optim.Optimizer`: `param_groups` is a list of dicts, each holding its
`params` plus every hyper-parameter (defaults filled in), and `state` maps a parameter
to a dict of its running buffers. `state_dict()` uses PyTorch's layout, with parameters
replaced by their position counted across groups:

    {"state": {0: {"step": 3, "exp_avg": array, ...}, ...},
     "param_groups": [{"lr": 1e-3, ..., "params": [0, 1, 2]}, ...]}

Buffers in `state` are raw arrays (numpy or CuPy, matching the parameter), never
Tensors: updates are plain in-place array arithmetic on `p.data`, so a step cannot
record an autograd graph, and parameters that share an array (tied weights) see the
update through every Tensor that holds it. Each step bumps the version counter of every
parameter it writes, so a graph that saved a parameter before the step refuses to
backward through the old values.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from minitl.autograd_state import enable_grad
from minitl.backend import array_module
from minitl.tensor import Tensor

# What optimizers accept: Tensors, (name, Tensor) pairs, or dicts {"params": ..., **hparams}.
ParamsT = Iterable[Tensor] | Iterable[tuple[str, Tensor]] | Iterable[dict[str, Any]]


class Optimizer:
    """Base class: subclasses set `defaults`, override `_check_hparams` and `step`."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._check_hparams(defaults)
        self.defaults = defaults
        self.state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise ValueError(
                "params should be an iterable of Tensors or dicts, got a single Tensor; "
                "wrap it in a list"
            )
        if isinstance(params, (set, frozenset)):
            raise ValueError("params must be an ordered collection (list, tuple, generator), "
                             "not a set: state_dict indices depend on the order")
        items: list[Any] = list(params)
        if len(items) == 0:
            raise ValueError("optimizer got an empty parameter list")
        groups = items if isinstance(items[0], dict) else [{"params": items}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups -------------------------------------------------------------------

    @staticmethod
    def _check_hparams(hparams: dict[str, Any]) -> None:
        """Raise ValueError naming any invalid hyper-parameter (checked for every group)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group (e.g. layers unfrozen mid-training); unset options take defaults."""
        if not isinstance(param_group, dict):
            raise ValueError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)  # never mutate the caller's dict
        params = group.get("params")
        if params is None:
            raise ValueError("param_group has no 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise ValueError("param_group['params'] must be ordered (a list), not a set")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError("either all params in a group are (name, Tensor) pairs or none")
            group["param_names"] = names
            params = [p[1] for p in params]
        for p in params:
            if not isinstance(p, Tensor):
                raise ValueError(f"optimizer can only optimize Tensors, got {type(p).__name__}: "
                                 f"{p!r:.80}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor (it has a grad_fn); "
                                 "optimize the leaf it was computed from")
        group["params"] = params

        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_hparams(group)

        # A parameter listed twice would be updated twice per step; reject it instead of
        # silently doubling its learning rate (PyTorch only warns).
        seen = {id(p) for p in params}
        if len(seen) != len(params):
            raise ValueError("a parameter group contains the same parameter more than once")
        for i, other in enumerate(self.param_groups):
            if any(id(p) in seen for p in other["params"]):
                raise ValueError(f"some parameters of the new group already belong to "
                                 f"param_groups[{i}]; a parameter may appear in one group only")
        self.param_groups.append(group)

    # ---- stepping -----------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (`set_to_none`, the default) or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns `closure()` if given."""
        raise NotImplementedError

    def _eval_closure(self, closure: Callable[[], Any] | None) -> Any:
        # The closure recomputes the loss and calls backward(), which needs grad mode even
        # if step() itself is called under no_grad.
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ---- checkpoints --------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """PyTorch-layout snapshot; every array is copied, so later steps do not change it."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state: dict[Any, dict[str, Any]] = {}
        for key, value in self.state.items():
            if isinstance(key, Tensor):
                if id(key) not in index:  # state of a parameter no longer optimized
                    continue
                key = index[id(key)]
            state[key] = {k: _copy(v) for k, v in value.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a `state_dict()`; buffers are copied and moved to each parameter's
        device and floating dtype. Hyper-parameters come from the saved groups.

        Everything is checked before anything changes, so a failed load leaves the
        optimizer as it was.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"parameter group {i} has {len(saved['params'])} parameters in the loaded "
                    f"state dict but {len(group['params'])} in the optimizer"
                )
        id_map: dict[Any, Tensor] = {}
        for group, saved in zip(self.param_groups, saved_groups):
            for idx, p in zip(saved["params"], group["params"]):
                id_map[_as_index(idx)] = p

        new_state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            p = id_map.get(_as_index(key))
            if p is None:
                new_state[key] = copy.deepcopy(value)
            else:
                new_state[p] = {k: _cast_to_param(k, v, p) for k, v in value.items()}

        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            self._check_hparams(new_group)
            new_groups.append(new_group)

        self.state = new_state
        self.param_groups = new_groups

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


# ---- helpers shared by the optimizers ------------------------------------------------


def check_nonnegative(name: str, value: Any) -> None:
    # Written `not 0 <= v` so that NaN fails too.
    if not 0.0 <= value:
        raise ValueError(f"Invalid {name} value: {value}")


def check_unit_interval(name: str, value: Any) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid {name}: {value} (expected 0 <= {name} < 1)")


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not np.isscalar(value)


def _copy(value: Any) -> Any:
    if _is_array(value):
        return value.copy()
    return copy.deepcopy(value)


def _as_index(key: Any) -> Any:
    # Keys may have become strings on the way through a JSON header.
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return key


def _cast_to_param(key: str, value: Any, p: Tensor) -> Any:
    """Copy a saved buffer onto `p`'s device, in `p`'s dtype when floating point."""
    if key == "step":
        return int(value)
    if isinstance(value, Tensor):
        value = value.data
    if not _is_array(value):
        return copy.deepcopy(value)
    if tuple(value.shape) != p.shape:
        raise ValueError(f"state[{key!r}] has shape {tuple(value.shape)} but its parameter "
                         f"has shape {p.shape}")
    xp = array_module(p.data)
    if xp is np and array_module(value) is not np:
        value = value.get()  # CuPy -> host
    dtype = p.dtype if np.issubdtype(value.dtype, np.floating) else value.dtype
    return xp.array(value, dtype=dtype, copy=True)
