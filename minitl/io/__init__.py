"""Checkpoint I/O: minitl Tensors <-> safetensors files (no pickle, loading runs no code).

``save`` / ``load`` work on state dicts of Tensors; the numpy-level ``save_file``,
``load_file``, ``load_metadata`` and ``read_header`` live in ``minitl.io.safetensors``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minitl.io.safetensors import load_file, load_metadata, read_header, save_file

if TYPE_CHECKING:
    from minitl.tensor import Tensor

__all__ = ["load", "load_file", "load_metadata", "read_header", "save", "save_file"]


def save(state_dict: Mapping[str, Any], path: str | os.PathLike[str],
         metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict (name -> Tensor or numpy array) to a safetensors file, atomically.

    Tensors on another device are copied to the host first; autograd history is not saved.

    Raises:
        ValueError: a name, value, dtype or metadata entry is invalid (the message names it).
    """
    from minitl.tensor import Tensor  # imported here: minitl.tensor may import minitl.io

    if not isinstance(state_dict, Mapping):
        raise ValueError(f"expected a dict of name -> Tensor, got {type(state_dict).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        if isinstance(value, Tensor):
            value = value.data if isinstance(value.data, np.ndarray) else value.cpu().numpy()
        elif not isinstance(value, (np.ndarray, np.generic)):
            raise ValueError(f"tensor {name!r} is a {type(value).__name__}, "
                             "not a Tensor or numpy array")
        arrays[name] = value
    save_file(arrays, path, metadata=metadata)


def load(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Tensor]:
    """Load a safetensors file as a dict of name -> Tensor (``requires_grad=False``).

    ``BF16`` tensors come back as float32 (see ``minitl.io.safetensors``).

    Raises:
        ValueError: the file is truncated or malformed.
    """
    from minitl.tensor import Tensor

    out: dict[str, Tensor] = {}
    for name, arr in load_file(path).items():
        t = Tensor(arr)
        out[name] = t if str(device) == "cpu" else t.to(device)
    return out
