"""Writing GGUF files (version 3): metadata and tensors, quantized on the way out if asked.

    write_gguf("tiny.gguf",
               {"general.architecture": "llama", "llama.block_count": 2,
                "tokenizer.ggml.tokens": ["a", "b"], "llama.rope.freq_base": 10000.0},
               {"token_embd.weight": ("Q8_0", emb),      # float array, quantized here
                "output_norm.weight": norm})             # float array, stored as F32

Value types follow the Python value unless given as `(type name, value)`: bool -> BOOL,
int -> UINT32 (INT32 if negative, 64-bit where it does not fit), float -> FLOAT32,
str -> STRING, a list or 1-D numpy array -> ARRAY of its elements' type. Tensors are numpy
arrays in numpy order (the last axis becomes ggml's ne0), written after a header padded to
`alignment`, each tensor padded to it too, as llama.cpp writes them. The file is replaced
atomically (minitl.io.safetensors.atomic_write).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from minitl.io.gguf import DEFAULT_ALIGNMENT, MAGIC, VALUE_TYPES
from minitl.io.gguf_quants import quantize, row_bytes, type_info
from minitl.io.safetensors import atomic_write

__all__ = ["write_gguf"]

_TYPE_IDS = {name: i for i, (name, _) in VALUE_TYPES.items()}
_NUMPY_TYPES = {"u1": "UINT8", "i1": "INT8", "u2": "UINT16", "i2": "INT16", "u4": "UINT32",
                "i4": "INT32", "f4": "FLOAT32", "u8": "UINT64", "i8": "INT64", "f8": "FLOAT64",
                "b1": "BOOL"}


def _infer(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "BOOL"
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 1 << 32:
            return "UINT32"
        if -(1 << 31) <= v < 0:
            return "INT32"
        return "UINT64" if v > 0 else "INT64"
    if isinstance(value, (float, np.floating)):
        return "FLOAT32"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "ARRAY"
    raise ValueError(f"cannot store a {type(value).__name__} in GGUF metadata")


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: str, value: Any) -> bytes:
    if vtype == "STRING":
        return _string(value)
    if vtype == "ARRAY":
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) \
                and value[0] in _TYPE_IDS:
            etype, items = value  # ("INT32", [...]): an explicit element type
        elif isinstance(value, np.ndarray):
            etype, items = _NUMPY_TYPES[value.dtype.str[1:]], value.tolist()
        else:
            items = list(value)
            etype = _infer(items[0]) if items else "UINT8"
        out = struct.pack("<IQ", _TYPE_IDS[etype], len(items))
        return out + b"".join(_value(etype, v) for v in items)
    fmt = VALUE_TYPES[_TYPE_IDS[vtype]][1]
    return struct.pack(fmt, bool(value) if vtype == "BOOL" else value)


def _tensor_bytes(name: str, spec: Any) -> tuple[int, tuple[int, ...], bytes]:
    """(ggml type id, numpy shape, stored bytes) of one tensor entry."""
    stored = isinstance(spec, tuple) and len(spec) > 2  # (type, bytes, shape)
    if isinstance(spec, tuple):
        tname, arr = spec[0], np.asarray(spec[1])
        shape = tuple(int(d) for d in spec[2]) if stored else arr.shape
    else:
        tname, arr = "F32", np.asarray(spec)
        shape = arr.shape
    info = type_info(tname)
    if not shape:
        raise ValueError(f"tensor {name!r}: GGUF tensors have 1 to 4 dimensions, got a scalar")
    if stored:
        data = np.ascontiguousarray(arr).tobytes()
        want = int(np.prod(shape[:-1], dtype=np.int64)) * row_bytes(info.id, shape[-1])
        if len(data) != want:
            raise ValueError(f"tensor {name!r}: {info.name} {shape} needs {want} bytes, got "
                             f"{len(data)}")
    else:
        data = quantize(np.asarray(arr, np.float32).reshape(shape), info.id).tobytes()
    return info.id, shape, data


def write_gguf(path: str | os.PathLike[str], metadata: Mapping[str, Any],
               tensors: Mapping[str, Any], alignment: int = DEFAULT_ALIGNMENT) -> None:
    """Write a GGUF v3 file (see the module docstring for the value and tensor forms)."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    meta = dict(metadata)
    if alignment != DEFAULT_ALIGNMENT:
        meta["general.alignment"] = ("UINT32", alignment)
    header = [MAGIC, struct.pack("<IQQ", 3, len(tensors), len(meta))]
    for key, value in meta.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) \
                and value[0] in _TYPE_IDS:
            vtype, value = value
        else:
            vtype = _infer(value)
        header += [_string(key), struct.pack("<I", _TYPE_IDS[vtype]), _value(vtype, value)]
    blobs, offset = [], 0
    for name, spec in tensors.items():
        tid, shape, data = _tensor_bytes(name, spec)
        ne = tuple(reversed(shape))
        header += [_string(name), struct.pack("<I", len(ne)),
                   struct.pack(f"<{len(ne)}Q", *ne), struct.pack("<IQ", tid, offset)]
        pad = -len(data) % alignment
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = b"".join(header)
    head += b"\0" * (-len(head) % alignment)

    def write(f: IO[bytes]) -> None:
        f.write(head)
        for blob in blobs:
            f.write(blob)

    atomic_write(path, write)

