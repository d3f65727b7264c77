"""Training checkpoints: one safetensors file holding a whole nested state.

A trainer's state is a tree of dicts, lists and tuples whose leaves are arrays (model
weights, optimizer moments, best weights kept by a callback) or plain values (step
counters, hyper-parameters, RNG states). `save_state` writes every array as a tensor
named by its path in the tree (`model.fc.weight`, `optimizer.state.0.exp_avg`) and the
rest of the tree as JSON in the file's `__metadata__`, with each array replaced by
`{"__array__": name}`. Loading reverses it. The format keeps what JSON alone would lose:
tuples stay tuples and integer dict keys stay integers (optimizer state is keyed by
parameter index), so a loaded state equals the saved one.

The write is atomic (`minitl.io.save_file`): a run killed while saving leaves the
previous file intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from minitl.io import load_file, load_metadata, save_file
from minitl.tensor import Tensor

__all__ = ["FORMAT", "load_state", "model_state_dict", "pack", "save_state", "unpack"]

FORMAT = "minitl.trainer/1"

_ARRAY, _TUPLE, _ITEMS = "__array__", "__tuple__", "__items__"


def _to_host(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.data
    if not isinstance(value, np.ndarray):
        value = value.get()  # CuPy -> host
    return value


def _is_array(value: Any) -> bool:
    return isinstance(value, (Tensor, np.ndarray)) or hasattr(value, "__cuda_array_interface__")


def pack(tree: Any, arrays: dict[str, np.ndarray], path: str = "") -> Any:
    """A JSON-able copy of `tree`; its arrays are moved into `arrays` under their path."""
    if _is_array(tree):
        name = path or "_"
        if name in arrays:
            raise ValueError(f"checkpoint: two arrays would both be stored as {name!r}")
        arrays[name] = _to_host(tree)
        return {_ARRAY: name}
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, tuple):
        return {_TUPLE: [pack(v, arrays, f"{path}.{i}" if path else str(i))
                         for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [pack(v, arrays, f"{path}.{i}" if path else str(i)) for i, v in enumerate(tree)]
    if isinstance(tree, Mapping):
        def child(k: Any) -> str:
            return f"{path}.{k}" if path else str(k)

        if all(isinstance(k, str) and not k.startswith("__") for k in tree):
            return {k: pack(v, arrays, child(k)) for k, v in tree.items()}
        return {_ITEMS: [[pack(k, {}, ""), pack(v, arrays, child(k))]
                         for k, v in tree.items()]}
    raise TypeError(f"checkpoint: cannot store {type(tree).__name__} at {path or 'the root'!r} "
                    "(only arrays, Tensors, numbers, strings, None, lists, tuples and dicts)")


def unpack(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of `pack`."""
    if isinstance(tree, list):
        return [unpack(v, arrays) for v in tree]
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return arrays[tree[_ARRAY]]
        if set(tree) == {_TUPLE}:
            return tuple(unpack(v, arrays) for v in tree[_TUPLE])
        if set(tree) == {_ITEMS}:
            return {_hashable(unpack(k, arrays)): unpack(v, arrays) for k, v in tree[_ITEMS]}
        return {k: unpack(v, arrays) for k, v in tree.items()}
    return tree


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def save_state(tree: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `tree` to a safetensors file, atomically."""
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(pack(tree, arrays), separators=(",", ":"))
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    save_file(arrays, path, metadata={"format": FORMAT, "state": meta})


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by `save_state` (arrays come back as numpy arrays).

    Raises:
        ValueError: the file is not a minitl training checkpoint, or a damaged one (the
            message names the file and what is wrong).
    """
    metadata = load_metadata(path)
    if metadata.get("format") != FORMAT or "state" not in metadata:
        raise ValueError(f"{os.fspath(path)}: not a minitl training checkpoint (format "
                         f"{metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        tree = json.loads(metadata["state"])
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: damaged minitl training checkpoint: its state "
                         f"is not valid JSON ({e})") from None
    try:
        state = unpack(tree, load_file(path))
    except (KeyError, TypeError) as e:  # {"__array__": name} with no such tensor, etc.
        raise ValueError(f"{os.fspath(path)}: damaged minitl training checkpoint: its state "
                         f"refers to tensor {e} that the file does not hold") from None
    if not isinstance(state, dict):
        raise ValueError(f"{os.fspath(path)}: damaged minitl training checkpoint: its state "
                         f"is a {type(state).__name__}, not a dict")
    return state


def model_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Only the model weights of a training checkpoint, ready for `load_state_dict`."""
    prefix = "model."
    return {k[len(prefix):]: Tensor(v) for k, v in load_file(path).items()
            if k.startswith(prefix)}
