"""ggml's tensor types: block layouts, numpy dequantizers and quantizers (the references).

A ggml tensor is stored row by row; each row of `ne0` values is cut into blocks of
`block_size` values, and a quantized block packs one or two float16 scales with the codes:

    Q8_0  34 bytes / 32 values   d (f16), 32 x int8 q              x = d * q
    Q4_0  18 bytes / 32 values   d (f16), 16 bytes of nibbles      x = d * (q - 8)
    Q4_1  20 bytes / 32 values   d (f16), m (f16), 16 bytes        x = d * q + m

In a 4-bit block byte i holds value i in its low nibble and value i + 16 in its high nibble
(ggml's `dequantize_row_q4_0`). Q4_1 is about 5 bits a weight, a sixth of float32.

`dequantize` runs `minitl.backend.reference.dequantize_blocks`, the numpy reference every
faster path is checked against (the C++ dequantize-GEMM in csrc/cpu/qgemm.cpp, and the `gguf`
package in the tests); it computes exactly what ggml's reference does, in float32
(`d * q + m`, not a fused multiply-add).
`quantize` follows ggml's `quantize_row_*_ref` (the same rounding), so a float model can be
stored in a file llama.cpp reads and minitl can test its kernels on any shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitl.backend.reference import dequantize_blocks

__all__ = ["GGML_TYPES", "GGMLType", "dequantize", "quantize", "row_bytes", "type_info"]


@dataclass(frozen=True)
class GGMLType:
    name: str
    id: int  # the number stored in a GGUF tensor info
    block_size: int  # values per block
    type_size: int  # bytes per block


# Sizes of every type a GGUF file may name (ggml.c: type_traits), so that any file's layout
# can be checked even where minitl has no dequantizer for a type.
GGML_TYPES: dict[int, GGMLType] = {t.id: t for t in (
    GGMLType("F32", 0, 1, 4), GGMLType("F16", 1, 1, 2), GGMLType("Q4_0", 2, 32, 18),
    GGMLType("Q4_1", 3, 32, 20), GGMLType("Q5_0", 6, 32, 22), GGMLType("Q5_1", 7, 32, 24),
    GGMLType("Q8_0", 8, 32, 34), GGMLType("Q8_1", 9, 32, 36), GGMLType("Q2_K", 10, 256, 84),
    GGMLType("Q3_K", 11, 256, 110), GGMLType("Q4_K", 12, 256, 144),
    GGMLType("Q5_K", 13, 256, 176), GGMLType("Q6_K", 14, 256, 210),
    GGMLType("Q8_K", 15, 256, 292), GGMLType("I8", 24, 1, 1), GGMLType("I16", 25, 1, 2),
    GGMLType("I32", 26, 1, 4), GGMLType("I64", 27, 1, 8), GGMLType("F64", 28, 1, 8),
    GGMLType("BF16", 30, 1, 2),
)}
_BY_NAME = {t.name: t for t in GGML_TYPES.values()}
DEQUANTIZABLE = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0")
QUANTIZABLE = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")


def type_info(t: int | str) -> GGMLType:
    """The layout of a ggml type, by id (2) or name ("Q4_0")."""
    found = _BY_NAME.get(t) if isinstance(t, str) else GGML_TYPES.get(int(t))
    if found is None:
        raise ValueError(f"unknown ggml tensor type {t!r}; known: "
                         f"{', '.join(f'{x.name} ({x.id})' for x in GGML_TYPES.values())}")
    return found


def row_bytes(t: int | str, n: int) -> int:
    """Bytes of one row of `n` values; `n` must be a whole number of blocks."""
    info = type_info(t)
    if n % info.block_size:
        raise ValueError(f"{info.name}: a row of {n} values is not a whole number of "
                         f"{info.block_size}-value blocks")
    return n // info.block_size * info.type_size


def dequantize(data: np.ndarray, t: int | str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array of `shape` (numpy order, last axis = ggml's ne0) from its stored bytes.

    Raises:
        ValueError: the byte count does not match the shape, or the type is unknown.
        NotImplementedError: a known type minitl has no dequantizer for (K-quants, ...).
    """
    info = type_info(t)
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    n = int(np.prod(shape, dtype=object))
    inner = shape[-1] if shape else 1
    expect = (n // inner) * row_bytes(info.id, inner) if inner else 0
    if raw.size != expect:
        raise ValueError(f"{info.name} tensor of shape {tuple(shape)} needs {expect} bytes, "
                         f"got {raw.size}")
    if info.name not in DEQUANTIZABLE:
        raise NotImplementedError(f"no dequantizer for ggml type {info.name}; minitl reads "
                                  f"{', '.join(DEQUANTIZABLE)}")
    rows = n // inner if inner else 0
    return dequantize_blocks(raw.reshape(rows, -1) if rows else raw.reshape(0, 0),
                             info.id).reshape(shape)


def _round_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: halves away from zero (numpy's round goes to even)."""
    return np.trunc(x + np.copysign(np.float32(0.5), x)).astype(np.float32)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def quantize(x: np.ndarray, t: int | str) -> np.ndarray:
    """Stored bytes (rows, row_bytes) uint8 of float array `x` (..., ne0) as type `t`.

    Rounding follows ggml's reference quantizers, so the bytes equal llama.cpp's.
    """
    info = type_info(t)
    if info.name not in QUANTIZABLE:
        raise NotImplementedError(f"no quantizer for ggml type {info.name}; minitl writes "
                                  f"{', '.join(QUANTIZABLE)}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
    inner = x.shape[-1]
    rows = x.reshape(-1, inner)
    nbytes = row_bytes(info.id, inner)
    if info.name == "F32":
        return rows.astype("<f4").view(np.uint8).reshape(len(rows), nbytes)
    if info.name == "F16":
        return rows.astype("<f2").view(np.uint8).reshape(len(rows), nbytes)
    b = rows.reshape(-1, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        if info.name == "Q8_0":
            d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
            codes = _round_away(b * inv).astype(np.int8).view(np.uint8)
            parts = [d.astype("<f2").view(np.uint8), codes]
        elif info.name == "Q4_0":
            amax_at = np.abs(b).argmax(axis=1)[:, None]
            d = np.take_along_axis(b, amax_at, axis=1) / np.float32(-8)
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
            q = np.clip(np.trunc(b * inv + np.float32(8.5)), 0, 15).astype(np.uint8)
            parts = [d.astype("<f2").view(np.uint8), _pack_nibbles(q)]
        else:  # Q4_1
            lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
            d = (hi - lo) / np.float32(15)
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
            q = np.clip(np.trunc((b - lo) * inv + np.float32(0.5)), 0, 15).astype(np.uint8)
            parts = [d.astype("<f2").view(np.uint8), lo.astype("<f2").view(np.uint8),
                     _pack_nibbles(q)]
    return np.concatenate(parts, axis=1).reshape(len(rows), nbytes)
