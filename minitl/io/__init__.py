"""Checkpoint I/O: minitl Tensors <-> safetensors files (no pickle, loading runs no code).

``save`` / ``load`` work on state dicts of Tensors and on nested checkpoints
(``minitl.io.tree``); the numpy-level ``save_file``, ``load_file``, ``load_metadata`` and
``read_header`` live in ``minitl.io.safetensors``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minitl.io import tree
from minitl.io.safetensors import load_file, load_metadata, read_header, save_file

if TYPE_CHECKING:
    from minitl.tensor import Tensor

__all__ = ["load", "load_file", "load_metadata", "read_header", "save", "save_file",
           "write_json"]


def save(obj: Mapping[str, Any], path: str | os.PathLike[str],
         metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict, or a nested checkpoint, to a safetensors file, atomically.

    `obj` maps names to Tensors or numpy arrays, to dicts of the same, and to int, float,
    str or bool scalars: `mt.save({"model": model.state_dict(), "epoch": 3}, path)`.
    A flat dict of tensors is written as a plain safetensors file. Anything nested or
    scalar is flattened to dotted names, with its shape and scalars in the metadata entry
    `minitl.tree` (see `minitl.io.tree`), and `load` gives the nested dict back.

    Tensors on another device are copied to the host first; autograd history is not saved.
    The file is safetensors whatever its name; a name not ending in ``.safetensors`` (``.pt``,
    ``.bin``) draws a warning, since other tools will take it for a pickle.

    Raises:
        ValueError: a name, value, dtype or metadata entry is invalid (the message names it).
    """
    from minitl.tensor import Tensor  # imported here: minitl.tensor may import minitl.io

    if not isinstance(obj, Mapping):  # ValueError, as for every other bad checkpoint input
        raise ValueError(  # noqa: TRY004
            f"expected a dict of name -> Tensor, got {type(obj).__name__}")
    _warn_on_suffix(path)

    def to_array(name: str, value: Any) -> np.ndarray | None:
        if isinstance(value, Tensor):
            return value.data if isinstance(value.data, np.ndarray) else value.cpu().numpy()
        if isinstance(value, (np.ndarray, np.generic)):
            return np.asarray(value)
        return None

    if not tree.needs_tree(obj):
        arrays: dict[str, np.ndarray] = {}
        for name, value in obj.items():
            arr = to_array(name, value)
            if arr is None:
                raise ValueError(f"tensor {name!r} is a {type(value).__name__}, "
                                 "not a Tensor or numpy array")
            arrays[name] = arr
        save_file(arrays, path, metadata=metadata)
        return
    if metadata is not None and tree.TREE_KEY in metadata:
        raise ValueError(f"metadata key {tree.TREE_KEY!r} is reserved for the shape of a "
                         "nested checkpoint")
    arrays, shape = tree.flatten(obj, to_array)
    save_file(arrays, path, metadata={**(metadata or {}), tree.TREE_KEY: shape})


def _warn_on_suffix(path: str | os.PathLike[str]) -> None:
    # A warning, not an error: `minitl pretrain --out`, Word2Vec.save and other callers have
    # always taken any file name, and raising here would come at the end of a training run.
    if not os.fspath(path).endswith(".safetensors"):
        warnings.warn(f"{os.fspath(path)!r}: minitl writes safetensors, not a pickle; "
                      "torch.load cannot read it. Name it *.safetensors.",
                      UserWarning, stacklevel=3)


def load(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Any]:
    """Load a safetensors file as a dict of name -> Tensor (``requires_grad=False``), or, for
    a file `save` wrote from a nested checkpoint, that nested dict with its scalars.

    ``BF16`` tensors come back as float32 (see ``minitl.io.safetensors``).

    Raises:
        ValueError: the file is truncated or malformed, or its ``minitl.tree`` entry does
            not match its tensors.
    """
    from minitl.tensor import Tensor

    out: dict[str, Tensor] = {}
    for name, arr in load_file(path).items():
        t = Tensor(arr)
        out[name] = t if str(device) == "cpu" else t.to(device)
    shape = load_metadata(path).get(tree.TREE_KEY)
    return out if shape is None else tree.unflatten(out, shape)


def write_json(path: str | os.PathLike[str], obj: Any, sort_keys: bool = False) -> None:
    """`obj` as indented JSON at `path`, atomically (temp file + rename); numpy scalars are
    written as numbers, anything else JSON cannot hold as its str()."""
    import json

    from minitl.io.safetensors import atomic_write

    text = json.dumps(obj, indent=2, sort_keys=sort_keys,
                      default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
