"""Just enough Parquet to read one flat column of strings or integers, without pyarrow.

Parquet (https://parquet.apache.org/docs/file-format/) stores a file as row groups of column
chunks of pages, with the schema and the page offsets in a footer encoded with Thrift's
compact protocol. This reader knows the subset a writer such as pyarrow produces for a
simple table: a flat REQUIRED or OPTIONAL column of BYTE_ARRAY (UTF-8) or INT32/INT64, data
pages v1 and v2, PLAIN and dictionary (PLAIN_DICTIONARY / RLE_DICTIONARY) encodings, and the
UNCOMPRESSED and SNAPPY codecs (a snappy decoder is below, so nothing else is needed).
Anything outside that subset, and any damage found on the way, raises `ParquetError` naming
the file and what was wrong. Nulls come back as None.

    words = read_column("glove_6B_index.parquet", "index")    # list[str], in row order
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

__all__ = ["ParquetError", "read_column", "snappy_decompress"]

_MAGIC = b"PAR1"
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
_BOOLEAN, _INT32, _INT64, _BYTE_ARRAY = 0, 1, 2, 6
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_CODECS = {0: "UNCOMPRESSED", 1: "SNAPPY", 2: "GZIP", 3: "LZO", 4: "BROTLI", 5: "LZ4",
           6: "ZSTD", 7: "LZ4_RAW"}


class ParquetError(ValueError):
    """A Parquet file is damaged or uses a feature this reader does not implement."""


# ---- snappy (https://github.com/google/snappy/blob/main/format_description.txt)
def snappy_decompress(data: bytes) -> bytes:
    """Raw snappy block: a varint length, then literals and back-references (copies)."""
    n, pos = _varint(data, 0)
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths above 60 follow in 1-4 bytes
            length = tag >> 2
            if length >= 60:
                w = length - 59
                length = int.from_bytes(data[pos:pos + w], "little")
                pos += w
            length += 1
            if pos + length > end:
                raise ParquetError(f"snappy: literal of {length} bytes runs past the end")
            out += data[pos:pos + length]
            pos += length
            continue
        if kind == 1:  # copy, 3-bit length, 11-bit offset
            length, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:  # copy with a 2- or 4-byte offset
            w = 2 if kind == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(data[pos:pos + w], "little")
            pos += w
        if pos > end or offset == 0 or offset > len(out):
            raise ParquetError(f"snappy: copy from offset {offset} with {len(out)} bytes "
                               "written")
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping copy: the last `offset` bytes repeat
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]
    if len(out) != n:
        raise ParquetError(f"snappy: block promises {n} bytes but holds {len(out)}")
    return bytes(out)


# ---- Thrift compact protocol: structs as {field id: value}
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ParquetError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _zigzag(buf: bytes, pos: int) -> tuple[int, int]:
    v, pos = _varint(buf, pos)
    return (v >> 1) ^ -(v & 1), pos


def _value(buf: bytes, pos: int, ctype: int, depth: int) -> tuple[Any, int]:
    if depth > 32:
        raise ParquetError("thrift: structures nested too deep")
    if ctype in (1, 2):  # bool inside a struct: the type is the value
        return ctype == 1, pos
    if ctype == 3:
        return buf[pos], pos + 1
    if ctype in (4, 5, 6):
        return _zigzag(buf, pos)
    if ctype == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if ctype == 8:
        n, pos = _varint(buf, pos)
        if pos + n > len(buf):
            raise ParquetError("thrift: binary field runs past the end")
        return buf[pos:pos + n], pos + n
    if ctype in (9, 10):  # list / set
        head = buf[pos]
        pos += 1
        n, etype = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        items = []
        for _ in range(n):
            if etype in (1, 2):  # bools in a list take a byte each
                items.append(buf[pos] == 1)
                pos += 1
            else:
                v, pos = _value(buf, pos, etype, depth + 1)
                items.append(v)
        return items, pos
    if ctype == 11:  # map
        n, pos = _varint(buf, pos)
        out: dict[Any, Any] = {}
        if n:
            kinds = buf[pos]
            pos += 1
            for _ in range(n):
                k, pos = _value(buf, pos, kinds >> 4, depth + 1)
                out[k], pos = _value(buf, pos, kinds & 0x0F, depth + 1)
        return out, pos
    if ctype == 12:
        return _struct(buf, pos, depth + 1)
    raise ParquetError(f"thrift: unknown field type {ctype}")


def _struct(buf: bytes, pos: int, depth: int = 0) -> tuple[dict[int, Any], int]:
    fields: dict[int, Any] = {}
    last = 0
    while True:
        if pos >= len(buf):
            raise ParquetError("thrift: struct runs past the end")
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, ctype = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            fid, pos = _zigzag(buf, pos)
        fields[fid], pos = _value(buf, pos, ctype, depth)
        last = fid


# ---- pages
def _levels_rle(buf: bytes, bit_width: int, count: int) -> np.ndarray:
    """The RLE / bit-packed hybrid (definition levels, dictionary indices): `count` values."""
    out = np.empty(count, dtype=np.int64)
    got = pos = 0
    byte_width = (bit_width + 7) // 8
    while got < count:
        header, pos = _varint(buf, pos)
        if header & 1:  # bit-packed groups of 8 values, least significant bit first
            n = (header >> 1) * 8
            nbytes = (header >> 1) * bit_width
            if pos + nbytes > len(buf):
                raise ParquetError("bit-packed run goes past the end of its page")
            bits = np.unpackbits(np.frombuffer(buf, np.uint8, nbytes, pos), bitorder="little")
            vals = bits.reshape(n, bit_width) @ (1 << np.arange(bit_width, dtype=np.int64)) \
                if bit_width else np.zeros(n, np.int64)
            pos += nbytes
        else:  # one value repeated
            n = header >> 1
            if pos + byte_width > len(buf):
                raise ParquetError("RLE run goes past the end of its page")
            vals = np.full(n, int.from_bytes(buf[pos:pos + byte_width], "little"))
            pos += byte_width
        if n == 0:
            raise ParquetError("empty RLE run")
        take = min(n, count - got)
        out[got:got + take] = vals[:take]
        got += take
    return out


def _plain(buf: bytes, ptype: int, count: int) -> list[Any]:
    if ptype == _BYTE_ARRAY:
        values: list[Any] = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(buf):
                raise ParquetError(f"page holds {len(values)} of its {count} strings")
            (n,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if pos + n > len(buf):
                raise ParquetError(f"string {len(values)} runs past the end of its page")
            values.append(buf[pos:pos + n].decode("utf-8"))
            pos += n
        return values
    dtype = np.dtype("<i4" if ptype == _INT32 else "<i8")
    if len(buf) < count * dtype.itemsize:
        raise ParquetError(f"page holds {len(buf)} bytes, too few for {count} integers")
    return np.frombuffer(buf, dtype, count).tolist()


def read_column(path: str | os.PathLike[str], column: str) -> list[Any]:
    """Every value of the flat column `column`, in row order (None for nulls)."""
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _read(data, column)
    except ParquetError as e:
        raise ParquetError(f"{name}: {e}") from None
    except (IndexError, struct.error, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ParquetError(f"{name}: damaged Parquet file ({type(e).__name__}: {e})") from None


def _read(data: bytes, column: str) -> list[Any]:
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise ParquetError("not a Parquet file (no PAR1 magic at both ends; truncated?)")
    (meta_len,) = struct.unpack_from("<I", data, len(data) - 8)
    if meta_len > len(data) - 12:
        raise ParquetError(f"footer length {meta_len} exceeds the file")
    meta, _ = _struct(data[len(data) - 8 - meta_len:len(data) - 8], 0)
    schema = meta[2]
    leaves = {s[4].decode(): s for s in schema[1:] if not s.get(5)}
    if column not in leaves:
        raise ParquetError(f"no column {column!r}; columns: {sorted(leaves)}")
    if len(leaves) != len(schema) - 1:
        raise ParquetError("nested schemas are not supported")
    leaf = leaves[column]
    ptype, repetition = leaf.get(1), leaf.get(3, 0)
    if ptype not in (_BYTE_ARRAY, _INT32, _INT64) or repetition == 2:
        raise ParquetError(f"column {column!r}: physical type {ptype} / repetition "
                           f"{repetition} not supported (flat strings or integers only)")
    max_def = 1 if repetition == 1 else 0
    values: list[Any] = []
    for group in meta.get(4, []):
        chunk = next((c[3] for c in group[1] if c[3][3][-1].decode() == column), None)
        if chunk is None:
            raise ParquetError(f"a row group lacks column {column!r}")
        codec = chunk[4]
        if codec not in (0, 1):
            raise ParquetError(f"codec {_CODECS.get(codec, codec)} not supported "
                               "(UNCOMPRESSED and SNAPPY only)")
        values += _read_chunk(data, chunk, ptype, max_def, codec)
    if len(values) != meta[3]:
        raise ParquetError(f"footer says {meta[3]} rows but the pages hold {len(values)}")
    return values


def _read_chunk(data: bytes, chunk: dict[int, Any], ptype: int, max_def: int,
                codec: int) -> list[Any]:
    pos = chunk.get(11) or chunk[9]  # the dictionary page, when there is one, comes first
    end = pos + chunk[7]
    if end > len(data) - 8:
        raise ParquetError("column chunk runs past the footer")
    dictionary: list[Any] | None = None
    out: list[Any] = []
    while len(out) < chunk[5]:
        if pos >= end:
            raise ParquetError(f"column chunk ends after {len(out)} of {chunk[5]} values")
        header, pos = _struct(data, pos)
        body, pos = data[pos:pos + header[3]], pos + header[3]
        if len(body) != header[3]:
            raise ParquetError("page runs past the end of the file")
        kind = header[1]
        if kind == _DICTIONARY_PAGE:
            page = snappy_decompress(body) if codec else body
            dictionary = _plain(page, ptype, header[7][1])
            continue
        if kind == _DATA_PAGE:
            h = header[5]
            page = snappy_decompress(body) if codec else body
            n, encoding = h[1], h[2]
            defs = None
            if max_def:
                (k,) = struct.unpack_from("<I", page, 0)
                defs = _levels_rle(page[4:4 + k], 1, n)
                page = page[4 + k:]
        elif kind == _DATA_PAGE_V2:
            h = header[8]
            n, encoding, dlen, rlen = h[1], h[4], h[5], h[6]
            levels, page = body[:rlen + dlen], body[rlen + dlen:]
            if codec and h.get(7, True):
                page = snappy_decompress(page)
            defs = _levels_rle(levels[rlen:], 1, n) if max_def else None
        else:
            raise ParquetError(f"page type {kind} not supported")
        present = n if defs is None else int(defs.sum())
        if encoding == _PLAIN:
            vals = _plain(page, ptype, present)
        elif encoding in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
            if dictionary is None:
                raise ParquetError("dictionary-encoded page without a dictionary page")
            ids = _levels_rle(page[1:], page[0], present)
            if present and (ids.min() < 0 or ids.max() >= len(dictionary)):
                raise ParquetError(f"dictionary index {int(ids.max())} out of range "
                                   f"({len(dictionary)} entries)")
            vals = [dictionary[i] for i in ids.tolist()]
        else:
            raise ParquetError(f"encoding {encoding} not supported")
        if defs is None:
            out += vals
        else:
            it = iter(vals)
            out += [next(it) if d else None for d in defs.tolist()]
    return out
