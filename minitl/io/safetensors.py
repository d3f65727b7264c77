"""Reading and writing the safetensors checkpoint format, from scratch, on numpy arrays.

A safetensors file is three parts (https://github.com/huggingface/safetensors):

    [ N: u64 little-endian ][ N bytes of UTF-8 JSON header ][ raw little-endian tensor bytes ]

The header maps each tensor name to ``{"dtype": "F32", "shape": [..], "data_offsets":
[begin, end]}`` (offsets relative to the start of the byte buffer) and may hold a
``"__metadata__"`` object of str -> str. Loading never executes code, which is why minitl
checkpoints use this format and not pickle.

Writing matches the reference implementation byte for byte (with at most one metadata
entry; the reference orders metadata by a hash map): compact JSON, ``__metadata__`` first,
tensors sorted by dtype alignment (descending) then name, header padded with spaces to a
multiple of 8 bytes, data packed without gaps. Files are written atomically, through a
temporary file named ``.<name>.minitl-<pid>-<random>.tmp`` beside the target; a process killed
mid-write leaves that file behind, and the next atomic write into the same directory removes
such leftovers (``remove_stale_temp_files``: only our own pattern, only when their writer is
gone).

Reading treats the file as hostile: every malformed header raises ``ValueError`` naming the
file and the problem, and only the bytes a valid header accounts for are ever read, so a
lying header cannot make the reader allocate more than the file holds. Two deliberate
leniencies versus the reference reader: gaps between tensor ranges and trailing bytes after
the last tensor are accepted (they are harmless); overlapping ranges are not.

numpy has no bfloat16, so ``BF16`` tensors load upcast (exactly) to float32: each 16-bit
pattern becomes the high half of a 32-bit float. They cannot be written back as BF16.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

__all__ = ["MAX_HEADER_SIZE", "atomic_write", "load_file", "load_metadata", "read_header",
           "remove_stale_temp_files", "save_file"]

# Same cap as the reference reader: no real header comes close, and it bounds the memory a
# hostile length field can make us allocate before anything else is checked.
MAX_HEADER_SIZE = 100_000_000
_MAX_INTP = int(np.iinfo(np.intp).max)
_MAX_DIM = _MAX_INTP  # a dimension must fit numpy's intp
_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
_METADATA_KEY = "__metadata__"

# safetensors dtype name -> little-endian numpy dtype of the stored bytes.
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bit patterns; upcast to float32 after reading
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),  # read as bytes, normalised to 0/1 (any non-zero byte is True)
}

# The reference sorts tensors by its Dtype enum, descending (the enum is ordered by
# alignment), then by name. These ranks reproduce that order for every dtype we write.
_WRITE_RANK = {
    "U64": 12, "I64": 11, "F64": 10, "F32": 9, "U32": 8, "I32": 7,
    "F16": 6, "U16": 5, "I16": 4, "I8": 3, "U8": 2, "BOOL": 1,
}

# numpy (kind, itemsize) -> safetensors dtype name, for writing.
_FROM_NUMPY = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8",
    ("b", 1): "BOOL",
}


@dataclass(frozen=True)
class _Entry:
    """One validated header entry."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data buffer
    end: int


# ---------------------------------------------------------------------------- writing


def _dtype_name(key: str, arr: np.ndarray) -> str:
    name = _FROM_NUMPY.get((arr.dtype.kind, arr.dtype.itemsize))
    if name is None:
        raise ValueError(
            f"tensor {key!r}: dtype {arr.dtype} is not supported by safetensors "
            f"(supported: {', '.join(sorted(_WRITE_RANK))})"
        )
    return name


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot go into a UTF-8 header
        raise ValueError(f"{what} is not encodable as UTF-8") from None


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict of str -> str, got {type(metadata).__name__}")
    for k, v in metadata.items():
        if not isinstance(k, str):
            raise ValueError(f"metadata key {k!r} is not a str")
        if not isinstance(v, str):
            raise ValueError(f"metadata value for key {k!r} is not a str ({type(v).__name__})")
        _check_utf8(k, f"metadata key {k!r}")
        _check_utf8(v, f"metadata value for key {k!r}")
    return dict(metadata)


def _prepare(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
    """Validate and normalise tensors; return (name, dtype, C-contiguous LE array), sorted."""
    if not isinstance(arrays, Mapping):
        raise ValueError(f"expected a dict of name -> numpy array, got {type(arrays).__name__}")
    items = []
    for key, value in arrays.items():
        if not isinstance(key, str):
            raise ValueError(f"tensor name {key!r} is not a str")
        if key == _METADATA_KEY:
            raise ValueError(f"tensor name {key!r} is reserved for the metadata")
        _check_utf8(key, f"tensor name {key!r}")
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise ValueError(f"tensor {key!r} is a {type(value).__name__}, not a numpy array")
        dtype = _dtype_name(key, value)
        if value.dtype.str[0] == ">":  # dtype.str spells the byte order out on any host
            value = value.astype(value.dtype.newbyteorder("<"))
        if not value.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            value = value.copy(order="C")
        items.append((key, dtype, value))
    items.sort(key=lambda it: (-_WRITE_RANK[it[1]], it[0]))
    return items


def _build_header(items: list[tuple[str, str, np.ndarray]], metadata: dict[str, str] | None
                  ) -> bytes:
    header: dict[str, Any] = {}
    if metadata is not None:
        header[_METADATA_KEY] = metadata
    offset = 0
    for name, dtype, arr in items:
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference pads so the data starts 8-byte aligned
    return len(raw).to_bytes(8, "little") + raw


def _current_umask() -> int:
    # Reading the umask through os.umask briefly changes it for every thread; Linux exposes
    # it read-only in /proc, so prefer that.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------- atomic writes
# Temporary files carry the writer's pid so a later save can tell a leftover of a killed
# process from a write in progress: `.<target name>.minitl-<pid>-<8 mkstemp chars>.tmp`.
_TMP_TAG = ".minitl-"
_TMP_RE = re.compile(r"\..*\.minitl-([0-9]+)-[a-z0-9_]{8}\.tmp", re.DOTALL)
STALE_TEMP_AGE_S = 30.0  # a leftover untouched for this long whose process is gone is removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) terminates the process on Windows: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive under another user; anything else: assume alive
        return True
    return True


def remove_stale_temp_files(directory: str | os.PathLike[str],
                            min_age_s: float = STALE_TEMP_AGE_S) -> list[str]:
    """Delete the temporary files `atomic_write` leaves when its process is killed mid-write,
    and nothing else: a file is removed only if its name matches minitl's pattern exactly,
    it is a regular file (not a link) owned by this user, untouched for `min_age_s` seconds,
    and the process id in its name no longer exists. Returns the names removed; errors are
    ignored (another process may be cleaning up at the same time)."""
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.fullmatch(entry.name) if _TMP_TAG in entry.name else None
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if (not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age_s
                    or (hasattr(os, "getuid") and st.st_uid != os.getuid())
                    or _pid_alive(int(m.group(1)))):
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except (OSError, ValueError):
            continue
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Create or replace `path` so that readers see the old file or the new one, never a
    part: `write(f)` fills a temporary file in the same directory, which is flushed, fsynced,
    given the mode a plain open() would (0666 less the umask; mkstemp's is 0600) and renamed
    over `path`. On any error the temporary file is removed and `path` is left untouched.
    Leftovers of killed writers in that directory are removed first."""
    target = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(target)
    remove_stale_temp_files(directory)
    # the name is bounded so that a long target name still leaves room for the suffix
    prefix = f".{base[:120]}{_TMP_TAG}{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _write_arrays(f: IO[bytes], items: list[tuple[str, str, np.ndarray]]) -> None:
    for _, _, arr in items:
        if arr.size:
            f.write(arr.reshape(-1).view(np.uint8).data)


def save_file(arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str],
              metadata: Mapping[str, str] | None = None) -> None:
    """Write ``arrays`` (name -> numpy array) to ``path`` in safetensors format.

    Arrays of dtype float16/32/64, int8/16/32/64, uint8/16/32/64 and bool are accepted;
    non-contiguous or big-endian arrays are converted. ``metadata`` must map str to str.
    The write is atomic (see `atomic_write`): data goes to a temporary file in the same
    directory, is flushed and fsync'ed, then renamed over ``path``; on any error the
    temporary file is removed and an existing ``path`` is left untouched.

    Raises:
        ValueError: a name, array or metadata entry is invalid (the message names it).
    """
    items = _prepare(arrays)
    header = _build_header(items, _check_metadata(metadata))


    def write(f: IO[bytes]) -> None:
        f.write(header)
        _write_arrays(f, items)

    atomic_write(path, write)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable; not possible on every platform, so best effort."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------- reading


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Corrupt(f"duplicate key {k!r} in header")
        out[k] = v
    return out


class _Corrupt(Exception):
    """Internal: a header problem, re-raised as ValueError with the file name attached."""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate_entry(name: str, info: Any, data_size: int) -> _Entry:
    if not isinstance(info, dict):
        raise _Corrupt(f"entry {name!r} is not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise _Corrupt(f"entry {name!r} is missing key {key!r}")
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise _Corrupt(f"entry {name!r} has unknown or unsupported dtype {dtype!r}")
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d <= _MAX_DIM for d in shape):
        raise _Corrupt(f"entry {name!r} has invalid shape {_short(shape)} "
                       "(expected a list of non-negative ints)")
    if len(shape) > _MAX_NDIM:
        raise _Corrupt(f"entry {name!r} has invalid shape with {len(shape)} dims "
                       f"(at most {_MAX_NDIM} supported)")
    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise _Corrupt(f"entry {name!r} has invalid data_offsets {_short(offsets)} "
                       "(expected [begin, end] ints)")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise _Corrupt(f"entry {name!r} has data_offsets [{begin}, {end}] outside the "
                       f"{data_size}-byte data buffer")
    itemsize = _DTYPES[dtype].itemsize
    numel, extent = 1, itemsize
    for d in shape:  # Python ints: no overflow however large the claimed dims
        numel *= d
        extent *= max(d, 1)
    expected = numel * itemsize
    if end - begin != expected:
        raise _Corrupt(f"entry {name!r} byte count {end - begin} does not match "
                       f"shape {_short(shape)} x {dtype} ({expected} bytes)")
    if extent > _MAX_INTP:  # numpy refuses such shapes even when a zero dim makes them empty
        raise _Corrupt(f"entry {name!r} has shape {_short(shape)} too large for numpy")
    return _Entry(name, dtype, tuple(shape), begin, end)


def _short(x: Any, limit: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def _parse(f: IO[bytes], file_size: int) -> tuple[dict[str, Any], list[_Entry], int]:
    """Read and validate the header; return (raw header, entries, data start offset)."""
    if file_size < 8:
        raise _Corrupt(f"file is too short ({file_size} bytes) to hold the 8-byte header length")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_SIZE:
        raise _Corrupt(f"header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit")
    if n > file_size - 8:
        raise _Corrupt(f"header length {n} is larger than the file ({file_size} bytes)")
    raw = f.read(n)
    if len(raw) != n:
        raise _Corrupt(f"header truncated: expected {n} bytes, read {len(raw)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Corrupt(f"header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Corrupt:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, int-digits limit, deep nesting
        raise _Corrupt(f"header is not valid JSON ({type(e).__name__}: {_short(str(e))})"
                       ) from None
    if not isinstance(header, dict):
        raise _Corrupt(f"header is not a JSON object (got {type(header).__name__})")

    meta = header.get(_METADATA_KEY)
    if meta is not None and not (isinstance(meta, dict) and
                                 all(isinstance(v, str) for v in meta.values())):
        raise _Corrupt("__metadata__ is not an object of str -> str")

    data_start = 8 + n
    data_size = file_size - data_start
    entries = [_validate_entry(name, info, data_size)
               for name, info in header.items() if name != _METADATA_KEY]
    # Overlap check on the non-empty ranges, in file order (empty ranges hold no bytes).
    prev: _Entry | None = None
    for ent in sorted((x for x in entries if x.end > x.begin), key=lambda x: x.begin):
        if prev is not None and ent.begin < prev.end:
            raise _Corrupt(f"entries {prev.name!r} [{prev.begin}, {prev.end}] and "
                           f"{ent.name!r} [{ent.begin}, {ent.end}] have overlapping "
                           "data_offsets")
        prev = ent
    return header, entries, data_start


def _open_and_parse(path: str | os.PathLike[str], f: IO[bytes]
                    ) -> tuple[dict[str, Any], list[_Entry], int]:
    try:
        return _parse(f, os.fstat(f.fileno()).st_size)
    except _Corrupt as e:
        raise ValueError(f"{os.fspath(path)}: invalid safetensors file: {e}") from None


def _read_entry(f: io.BufferedReader, e: _Entry, data_start: int, path: str) -> np.ndarray:
    stored = _DTYPES[e.dtype]
    try:
        arr = np.empty(e.shape, dtype=stored)
    except (ValueError, OverflowError, MemoryError) as err:
        raise ValueError(f"{path}: invalid safetensors file: entry {e.name!r} shape "
                         f"{_short(list(e.shape))} cannot be allocated ({err})") from None
    if arr.size:
        buf = arr.reshape(-1).view(np.uint8).data
        f.seek(data_start + e.begin)
        got = 0
        while got < len(buf):  # readinto may return short counts
            k = f.readinto(buf[got:])
            if not k:
                raise ValueError(f"{path}: invalid safetensors file: entry {e.name!r} "
                                 "data truncated (file changed while reading?)")
            got += k
    if e.dtype == "BF16":
        # bfloat16 is the top half of a float32: shifting the bits up is an exact upcast.
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    elif e.dtype == "BOOL":
        arr = arr != 0
    elif not stored.isnative:  # only on big-endian hosts
        arr = arr.astype(stored.newbyteorder("="))
    return arr


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the validated JSON header of a safetensors file (tensor data is not read).

    Keys are tensor names mapping to ``{"dtype", "shape", "data_offsets"}``, plus
    ``"__metadata__"`` when the file has metadata. Raises ``ValueError`` if it is malformed.
    """
    with open(path, "rb") as f:
        header, _, _ = _open_and_parse(path, f)
    return header


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the ``__metadata__`` dict of a safetensors file ({} when it has none)."""
    return dict(read_header(path).get(_METADATA_KEY) or {})


def load_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load every tensor of a safetensors file as a writable, owned numpy array.

    Tensors come back in header order with their stored dtype, except ``BF16`` which is
    upcast exactly to float32 (numpy has no bfloat16) and ``BOOL`` which becomes bool.

    Raises:
        ValueError: the file is truncated or its header is malformed (message names the
            file and the problem).
    """
    with open(path, "rb") as f:
        _, entries, data_start = _open_and_parse(path, f)
        return {e.name: _read_entry(f, e, data_start, os.fspath(path)) for e in entries}
