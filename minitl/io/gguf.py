"""Reading GGUF files (llama.cpp's model format, version 2 and 3), from scratch, memory-mapped.

A GGUF file is (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little-endian:

    "GGUF"  version u32  tensor_count u64  kv_count u64
    kv_count x   key: string, value type u32, value          (metadata)
    tensor_count x  name: string, n_dims u32, ne[n_dims] u64, ggml type u32, offset u64
    padding to `general.alignment` (32 by default), then the tensor data

with string = length u64 + UTF-8 bytes and array = element type u32 + count u64 + elements.
`ne[0]` is the fastest-moving dimension, so a tensor's numpy shape is `ne` reversed: a
Linear weight stored with ne = (in, out) is the (out, in) matrix Hugging Face uses.

    f = read_gguf("model.gguf")
    f.metadata["llama.block_count"]          # 30
    f.tensors["blk.0.attn_q.weight"]         # GGUFTensor(type=Q4_1, shape=(576, 576), ...)
    f.raw("blk.0.attn_q.weight")             # uint8 (576, 360): the blocks, a view of the map
    f.tensor("blk.0.attn_q.weight")          # float32 (576, 576), dequantized

The file is memory-mapped: `raw` costs nothing and the page cache holds the bytes once,
however many models share them. It is treated as hostile: every count, length, dimension,
type, offset and alignment is checked against the file's size before anything is read or
allocated, so a lying or truncated header raises ValueError naming the file and the field,
never a crash, a huge allocation or a read past the end. The dequantizers live in
minitl.io.gguf_quants; minitl.io.gguf_write writes files.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minitl.io.gguf_quants import GGMLType, dequantize, type_info

__all__ = ["VALUE_TYPES", "GGUFFile", "GGUFTensor", "read_gguf", "resolve_gguf"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 used 32-bit counts; nothing current writes it
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8  # arrays of arrays: the format allows nesting, no real file goes deep
_MAX_DIM = (1 << 63) - 1  # ggml dimensions are int64

# value type id -> (name, struct format) for fixed-size values; 8 = string, 9 = array.
VALUE_TYPES: dict[int, tuple[str, str]] = {
    0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"),
    4: ("UINT32", "<I"), 5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<B"),
    8: ("STRING", ""), 9: ("ARRAY", ""), 10: ("UINT64", "<Q"), 11: ("INT64", "<q"),
    12: ("FLOAT64", "<d"),
}
STRING, ARRAY = 8, 9
# The fewest bytes a key/value pair (key length, type, a one-byte value) and a tensor info
# (name length, n_dims, one dimension, type, offset) can take: a count beyond what the rest of
# the file could hold is refused before any loop runs.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8


@dataclass(frozen=True)
class GGUFTensor:
    """Where one tensor's bytes sit in the file and what they hold."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]  # numpy order: ggml's ne reversed
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=object))


class _Reader:
    """A cursor over the mapped bytes that refuses to step past the end."""

    def __init__(self, buf: Any, path: str) -> None:
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def fail(self, msg: str) -> ValueError:
        return ValueError(f"{self.path}: {msg}")

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise self.fail(f"truncated or corrupt: {what} needs {n} bytes at offset "
                            f"{self.pos}, but the file has {self.size - self.pos} left "
                            f"(size {self.size})")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def count(self, what: str, min_bytes: int) -> int:
        """A u64 element count, refused if `count * min_bytes` exceeds the bytes left."""
        n = self.u64(f"the count of {what}")
        left = self.size - self.pos
        if n * min_bytes > left:
            raise self.fail(f"{what}: a count of {n} cannot fit in the {left} bytes left "
                            f"(each takes at least {min_bytes})")
        return n

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype not in VALUE_TYPES:
            raise self.fail(f"{what} has unknown value type {vtype} (known: 0-12)")
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            return self.array(what, depth)
        v = self.unpack(VALUE_TYPES[vtype][1], what)
        return bool(v) if vtype == 7 else v

    def array(self, what: str, depth: int) -> Any:
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        etype = self.u32(f"the element type of {what}")
        if etype not in VALUE_TYPES:
            raise self.fail(f"{what} is an array of unknown value type {etype}")
        if etype in (STRING, ARRAY):
            n = self.count(what, 8 if etype == STRING else 12)
            return [self.value(etype, f"{what}[{i}]", depth + 1) for i in range(n)]
        fmt = VALUE_TYPES[etype][1]
        size = struct.calcsize(fmt)
        n = self.count(what, size)
        self.need(n * size, what)
        arr = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=n, offset=self.pos).copy()
        self.pos += n * size
        return arr.astype(bool) if etype == 7 else arr


class GGUFFile:
    """A parsed, memory-mapped GGUF file: `metadata`, `tensors`, and their bytes on demand.

    Raises (from the constructor):
        ValueError: not a GGUF file, an unsupported version, or a malformed header (the
            message names the file and the field).
        OSError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 4 + 4 + 8 + 8:
                raise ValueError(f"{self.path}: not a GGUF file ({size} bytes, shorter than "
                                 "the 24-byte header)")
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        r = _Reader(self._map, self.path)
        magic = bytes(self._map[:4])
        if magic != MAGIC:
            raise r.fail(f"not a GGUF file (starts with {magic!r}, expected {MAGIC!r})")
        r.pos = 4
        self.version = r.u32("the version")
        if self.version not in VERSIONS:
            hint = (" (a big-endian file? minitl reads little-endian GGUF only)"
                    if self.version >= 1 << 16 else "")
            raise r.fail(f"GGUF version {self.version} is not supported (versions "
                         f"{', '.join(map(str, VERSIONS))} are){hint}")
        n_tensors = r.u64("the tensor count")
        n_kv = r.count("metadata key/value pairs", _MIN_KV_BYTES)
        if n_tensors * _MIN_TENSOR_INFO_BYTES > size:
            raise r.fail(f"a tensor count of {n_tensors} cannot fit in a file of {size} bytes")

        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, int] = {}  # key -> value type id (for writing back)
        for i in range(n_kv):
            key = r.string(f"metadata key {i}")
            if key in self.metadata:
                raise r.fail(f"metadata key {key!r} appears twice")
            vtype = r.u32(f"the value type of {key!r}")
            self.metadata[key] = r.value(vtype, f"metadata {key!r}")
            self.metadata_types[key] = vtype

        self.alignment = self._alignment(r)
        infos = []
        for i in range(n_tensors):
            name = r.string(f"the name of tensor {i}")
            n_dims = r.u32(f"the dimension count of tensor {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise r.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
            ne = [r.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
            ttype = r.u32(f"the type of tensor {name!r}")
            offset = r.u64(f"the data offset of tensor {name!r}")
            infos.append((name, ne, ttype, offset))
        self.data_offset = -(-r.pos // self.alignment) * self.alignment
        if self.data_offset > size:
            raise r.fail(f"the header ends at {r.pos}, its padded end {self.data_offset} lies "
                         f"past the end of the file (size {size})")
        self.tensors: dict[str, GGUFTensor] = {}
        for name, ne, ttype, offset in infos:
            self.tensors[name] = self._tensor(r, name, ne, ttype, offset)
        self._check_overlaps(r)

    # ---- header checks ---------------------------------------------------------------------

    def _alignment(self, r: _Reader) -> int:
        if "general.alignment" not in self.metadata:
            return DEFAULT_ALIGNMENT
        a = self.metadata["general.alignment"]
        if self.metadata_types["general.alignment"] not in (4, 5, 10, 11) or \
                not 0 < a <= 1 << 20 or a & (a - 1):
            raise r.fail(f"general.alignment must be a power of two up to 2^20, got {a!r}")
        return int(a)

    def _tensor(self, r: _Reader, name: str, ne: list[int], ttype: int, offset: int
                ) -> GGUFTensor:
        if name in self.tensors:
            raise r.fail(f"tensor {name!r} appears twice")
        try:
            info = type_info(ttype)
        except ValueError:
            raise r.fail(f"tensor {name!r} has unknown ggml type {ttype}") from None
        if any(d > _MAX_DIM for d in ne):
            raise r.fail(f"tensor {name!r}: dimensions {ne} exceed int64")
        if ne[0] % info.block_size:
            raise r.fail(f"tensor {name!r}: {info.name} rows of {ne[0]} values are not a whole "
                         f"number of {info.block_size}-value blocks")
        n = 1
        for d in ne:
            n *= d
        nbytes = n // info.block_size * info.type_size
        if offset % self.alignment:
            raise r.fail(f"tensor {name!r}: data offset {offset} is not a multiple of the "
                         f"alignment {self.alignment}")
        start, data_size = self.data_offset + offset, self.size - self.data_offset
        if offset > data_size or nbytes > data_size - offset:
            raise r.fail(f"tensor {name!r} ({info.name}, shape {tuple(reversed(ne))}, {nbytes} "
                         f"bytes at data offset {offset}) runs past the end of the file "
                         f"(the data section holds {data_size} bytes): truncated or lying sizes")
        return GGUFTensor(name, info, tuple(int(d) for d in reversed(ne)), start, nbytes)

    def _check_overlaps(self, r: _Reader) -> None:
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values()
                       if t.nbytes)
        for (_, end0, a), (start1, _, b) in itertools.pairwise(spans):
            if start1 < end0:
                raise r.fail(f"tensors {a!r} and {b!r} overlap in the file")

    # ---- access ----------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def _info(self, name: str) -> GGUFTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor `name` as a read-only uint8 view (rows, bytes per row)
        of the mapped file: one row per ggml row (the last numpy axis), blocks along it."""
        t = self._info(name)
        row = t.shape[-1] // t.type.block_size * t.type.type_size
        rows = int(np.prod(t.shape[:-1], dtype=object))
        return np.frombuffer(self._map, dtype=np.uint8, count=t.nbytes,
                             offset=t.offset).reshape(rows, row)

    def tensor(self, name: str) -> np.ndarray:
        """Tensor `name` as a new float32 array of its numpy shape (dequantized)."""
        t = self._info(name)
        return dequantize(self.raw(name), t.type.id, t.shape)

    def __repr__(self) -> str:
        arch = self.metadata.get("general.architecture", "?")
        return (f"GGUFFile({self.path!r}, version={self.version}, architecture={arch!r}, "
                f"tensors={len(self.tensors)}, metadata={len(self.metadata)})")


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse and memory-map a GGUF file (see GGUFFile)."""
    return GGUFFile(path)


def resolve_gguf(name_or_path: str | os.PathLike[str]) -> Path:
    """The .gguf file an asset name ("smollm2-135m"), a file path or a folder holding exactly
    one .gguf file stands for (an asset is fetched on first use)."""
    from minitl import assets

    text = os.fspath(name_or_path)
    p = Path(text)
    if not p.exists() and text in assets.list_assets():
        p = assets.path(text)
    if p.is_dir():
        found = sorted(p.glob("*.gguf"))
        if len(found) != 1:
            raise FileNotFoundError(f"{p}: expected one .gguf file in the folder, found "
                                    f"{len(found)}")
        p = found[0]
    if not p.is_file():
        raise FileNotFoundError(f"{text!r} is neither a minitl asset nor a GGUF file "
                                f"(assets: {', '.join(assets.list_assets())})")
    return p
