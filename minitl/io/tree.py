"""Nested checkpoints in a flat format: `{"model": state_dict, "epoch": 3}` <-> safetensors.

safetensors holds only a flat name -> tensor table and str -> str metadata. A nested dict is
written as its tensors under dotted names (`model.fc.weight`) plus one metadata entry,
TREE_KEY, holding the dict's shape as JSON: each dict is a JSON object, each tensor `null`,
each int / float / str / bool scalar itself (JSON keeps the four types apart).

The shape is recorded, not re-derived by splitting names on dots, because the keys of a state
dict contain dots themselves: `{"model": {"fc.weight": w}}` must not come back as
`{"model": {"fc": {"weight": w}}}`. A flat dict of tensors gets no TREE_KEY, so its file
is byte for byte what it was before nesting existed, and other readers (PyTorch, PEFT,
HF) see an ordinary checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

TREE_KEY = "minitl.tree"
Scalar = bool | int | float | str
_SCALARS = (bool, int, float, str)


def needs_tree(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` has a nested dict or a scalar, which only the tree can carry."""
    return any(isinstance(v, (Mapping, *_SCALARS)) for v in obj.values())


def flatten(obj: Mapping[str, Any], to_array: Callable[[str, Any], np.ndarray | None]
            ) -> tuple[dict[str, np.ndarray], str]:
    """(dotted name -> array, the tree as JSON). `to_array(name, value)` turns a leaf into
    an array, or returns None when the value is not a tensor (then it must be a scalar)."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        shape: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):  # ValueError: save's one error for a bad checkpoint
                raise ValueError(  # noqa: TRY004
                    f"key {key!r} under {prefix[:-1] or 'the top'!r} is not a str")
            name = prefix + key
            if isinstance(value, Mapping):
                shape[key] = walk(value, name + ".")
                continue
            arr = to_array(name, value)
            if arr is None:
                if not isinstance(value, _SCALARS):
                    raise ValueError(f"{name!r} is a {type(value).__name__}; a checkpoint holds "
                                     "Tensors, numpy arrays, dicts and int/float/str/bool")
                shape[key] = value
                continue
            if name in arrays:
                raise ValueError(f"two entries flatten to the same name {name!r}; rename one")
            arrays[name] = arr
            shape[key] = None
        return shape

    tree = walk(obj, "")
    return arrays, json.dumps(tree, ensure_ascii=False)


def unflatten(tensors: Mapping[str, Any], tree_json: str) -> dict[str, Any]:
    """Rebuild the nested dict from the file's tensors and its TREE_KEY entry; every tensor
    must be placed exactly once, so a damaged or hand-edited tree is an error, not a silently
    partial checkpoint."""
    try:
        tree = json.loads(tree_json)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"metadata {TREE_KEY!r} is not valid JSON ({e})") from None
    if not isinstance(tree, dict):  # a malformed file: ValueError, as for every other
        raise ValueError(  # noqa: TRY004
            f"metadata {TREE_KEY!r} must be a JSON object, got {type(tree).__name__}")
    used: set[str] = set()
    # An explicit stack, not recursion: the depth of a tree read from a file is not ours to
    # trust.
    out: dict[str, Any] = {}
    stack: list[tuple[dict[str, Any], dict[str, Any], str]] = [(tree, out, "")]
    while stack:
        node, dest, prefix = stack.pop()
        for key, value in node.items():
            name = prefix + key
            if isinstance(value, dict):
                dest[key] = {}
                stack.append((value, dest[key], name + "."))
            elif value is None:
                if name not in tensors or name in used:
                    raise ValueError(f"metadata {TREE_KEY!r} places tensor {name!r}, which the "
                                     "file does not hold (or places twice)")
                used.add(name)
                dest[key] = tensors[name]
            elif isinstance(value, _SCALARS):
                dest[key] = value
            else:
                raise ValueError(f"metadata {TREE_KEY!r}: {name!r} is a JSON "
                                 f"{type(value).__name__}, not an object, null or scalar")
    missing = sorted(set(tensors) - used)
    if missing:
        raise ValueError(f"metadata {TREE_KEY!r} does not place tensors {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    return out
