"""Reader for PyTorch checkpoints (`torch.save` files) that never runs pickled code.

A `.pth`/`.pt` file is a pickle, and unpickling may call any importable function: loading a
stranger's checkpoint with plain `pickle` (or `torch.load(weights_only=False)`) runs whatever
it names. This reader unpickles with a `pickle.Unpickler` whose `find_class` knows five
kinds of global and refuses every other one before anything is called:

    collections.OrderedDict                      the state dict itself
    torch._utils._rebuild_tensor_v2              (storage, offset, size, stride, ...) -> tensor
    torch._utils._rebuild_parameter              (tensor, requires_grad, hooks) -> tensor
    torch.FloatStorage, torch.LongStorage, ...   dtype markers inside storage references

None of them is torch's own object: each maps to a stand-in here that records its arguments,
so torch need not be installed, and the tensors are built by numpy only after every size,
offset and stride has been checked against the bytes that are really in the file.

Two layouts exist (torch/serialization.py):

- zip (the default since PyTorch 1.6): `<archive>/data.pkl` is the pickle; its persistent
  ids `("storage", type, key, location, numel)` name raw records `<archive>/data/<key>`.
- legacy (`_use_new_zipfile_serialization=False`, every file from before 1.6): five pickles
  in a row, magic number 0x1950a86a20f9469cfc6c, protocol version 1001, a sys_info dict, the
  object (persistent ids `("storage", type, key, location, numel, view_metadata)`), the
  sorted list of storage keys; then, for each key in that order, an int64 element count
  and the storage's raw bytes.

    from minitl.io.torch_pickle import load_torch
    state = load_torch("efficientnet-lite0.pth")     # {"_conv_stem.weight": ndarray, ...}

Every malformed or truncated file raises ValueError. Memory is bounded by the file: each
storage is allocated only after its bytes were found in the file, and the arrays returned
hold at most the storages' elements plus MAX_EXTRA_BYTES in total, over the whole file. Views
beyond their storage's size (zero strides, overlapping views) draw on that one allowance, so
a few KB of pickle asking for many expanded views is refused, not materialised. Identical
views (same storage, offset, size and stride: tied weights) come back as one shared array,
as `torch.load` returns tensors sharing one storage, and cost nothing extra.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import IO, Any, Literal

import numpy as np

__all__ = ["load_torch", "load_torch_object"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# A view with zero strides may hold more elements than its storage; copying it out is
# capped so that a handful of bytes cannot ask for terabytes: per tensor, and (the bound that
# matters) in total over the whole file, beyond the bytes its storages hold.
MAX_EXPANDED_ELEMENTS = 1 << 26
MAX_EXTRA_BYTES = 1 << 28

# torch.<Name>Storage -> numpy dtype ("bf16": raw uint16, widened to float32 on output).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}

PathOrFile = str | os.PathLike[str] | IO[bytes]


# ---- stand-ins for the allowed globals ------------------------------------------------------

class _StorageType:
    """What `torch.FloatStorage` & co. unpickle to: a dtype marker, nothing callable."""

    __slots__ = ("bf16", "dtype", "name")

    def __init__(self, name: str) -> None:
        code = STORAGE_DTYPES[name]
        self.name = name
        self.bf16 = code == "bf16"
        self.dtype = np.dtype("u2" if self.bf16 else code)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"refusing to call torch.{self.name}: storages are only read from "
                         "the file's data records")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Storage:
    """A storage named by a persistent id; `data` is filled in once its bytes are read."""

    __slots__ = ("data", "key", "numel", "stype")

    def __init__(self, key: str, stype: _StorageType, numel: int) -> None:
        self.key, self.stype, self.numel = key, stype, numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """`_rebuild_tensor_v2`'s arguments, checked: a strided view of a storage."""

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _int(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:  # bool is an int subclass: refuse it too
        raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    return v


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument)
            f"{what} must be a tuple of ints, got {type(v).__name__}")
    return tuple(_int(i, what) for i in v)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor_v2: validate and record, allocate nothing."""
    if not isinstance(storage, _Storage):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument)
            f"_rebuild_tensor_v2: expected a storage, got {type(storage).__name__}")
    offset = _int(storage_offset, "storage offset")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides):
        raise ValueError(f"tensor size {shape} and stride {strides} differ in length")
    if len(shape) > 64:
        raise ValueError(f"tensor of {len(shape)} dimensions")
    numel = 1
    for n in shape:
        numel *= n
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= storage.numel:
            raise ValueError(f"tensor (offset {offset}, size {shape}, stride {strides}) reads "
                             f"element {last} of storage {storage.key!r}, which has "
                             f"{storage.numel} elements")
        if numel > max(storage.numel, MAX_EXPANDED_ELEMENTS):
            raise ValueError(f"tensor of size {shape} over a storage of {storage.numel} "
                             f"elements would expand beyond {MAX_EXPANDED_ELEMENTS} elements")
    return _TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False,
                       backward_hooks: Any = None) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_parameter: a Parameter loads as its tensor."""
    if not isinstance(data, _TensorRef):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument)
            f"_rebuild_parameter: expected a tensor, got {type(data).__name__}")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain data plus the globals in `_ALLOWED`; storages come back as
    `_Storage` records (one per key) when `storages` is given, else persistent ids raise."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage] | None = None,
                 zip_layout: bool = False) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = storages
        self.zip_layout = zip_layout

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise ValueError(f"refusing to load global {module}.{name}: a checkpoint may only "
                             "hold tensors, storages and OrderedDicts (loading it would run "
                             "code)") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if self.storages is None:
            raise ValueError(f"unexpected persistent id {pid!r} outside the object pickle")
        want = 5 if self.zip_layout else 6
        if not isinstance(pid, tuple) or len(pid) != want or pid[0] != "storage":
            raise ValueError(f"unsupported persistent id {pid!r} (expected a {want}-tuple "
                             "starting with 'storage')")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, _StorageType):
            raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument)
                f"persistent id {pid!r}: {stype!r} is not a storage type")
        if not isinstance(key, str) or not key or len(key) > 256:
            raise ValueError(f"persistent id {pid!r}: bad storage key")
        numel = _int(numel, "storage size")
        if not self.zip_layout and pid[5] is not None:
            raise ValueError(f"storage {key!r} is a view of another storage (PyTorch < 0.4 "
                             "checkpoints), which is not supported")
        seen = self.storages.get(key)
        if seen is None:
            seen = self.storages[key] = _Storage(key, stype, numel)
        elif seen.stype is not stype or seen.numel != numel:
            raise ValueError(f"storage {key!r} is referenced as both {seen.stype!r}[{seen.numel}]"
                             f" and {stype!r}[{numel}]")
        return seen


# ---- reading ----------------------------------------------------------------------------

_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, TypeError, KeyError, IndexError,
                  AttributeError, struct.error, UnicodeDecodeError, OverflowError,
                  RecursionError, MemoryError, ImportError)


# zipfile reports damaged headers with these (an unknown compression method is
# NotImplementedError, a set "encrypted" flag RuntimeError).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
               OSError, EOFError, KeyError, struct.error, UnicodeDecodeError, zlib.error)


def _unpickle(f: IO[bytes], what: str, storages: dict[str, _Storage] | None = None,
              zip_layout: bool = False) -> Any:
    try:
        return RestrictedUnpickler(f, storages, zip_layout).load()
    except ValueError:
        raise
    except _PICKLE_ERRORS as e:
        raise ValueError(f"corrupt or truncated checkpoint: cannot read the {what} pickle "
                         f"({type(e).__name__}: {e})") from None


def _remaining(f: IO[bytes]) -> int:
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    return end - here


def _read_legacy(f: IO[bytes]) -> tuple[Any, dict[str, _Storage]]:
    magic = _unpickle(f, "magic number")
    if magic != LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint: the legacy magic number is missing "
                         "(and it is not a zip archive)")
    protocol = _unpickle(f, "protocol version")
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy protocol version {protocol!r} (expected "
                         f"{LEGACY_PROTOCOL})")
    sys_info = _unpickle(f, "sys_info")
    if not isinstance(sys_info, dict):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument)
            f"malformed sys_info: {sys_info!r}")
    order: Literal["<", ">"] = "<" if sys_info.get("little_endian", True) else ">"
    storages: dict[str, _Storage] = {}
    obj = _unpickle(f, "object", storages)
    keys = _unpickle(f, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("malformed storage key list")
    if set(keys) != set(storages) or len(keys) != len(storages):
        raise ValueError(f"the storage key list ({len(keys)} keys) does not match the "
                         f"{len(storages)} storages the object references")
    for key in keys:
        s = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"truncated checkpoint: storage {key!r} is missing")
        (count,) = struct.unpack(order + "q", head)
        if count != s.numel:
            raise ValueError(f"storage {key!r}: the file says {count} elements, the object "
                             f"pickle {s.numel}")
        nbytes = count * s.stype.dtype.itemsize
        if nbytes > _remaining(f):
            raise ValueError(f"truncated checkpoint: storage {key!r} needs {nbytes} bytes, "
                             f"{_remaining(f)} are left")
        s.data = np.frombuffer(f.read(nbytes), dtype=s.stype.dtype.newbyteorder(order))
    return obj, storages


def _read_zip(zf: zipfile.ZipFile) -> tuple[Any, dict[str, _Storage]]:
    pickles = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"not a PyTorch zip checkpoint: expected one <archive>/data.pkl, "
                         f"found {pickles or 'none'}")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(zf.namelist())
    order: Literal["<", ">"] = "<"
    if prefix + "byteorder" in names:
        byteorder = _record(zf, prefix + "byteorder", 16).decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise ValueError(f"unknown byteorder record {byteorder!r}")
        order = "<" if byteorder == "little" else ">"
    storages: dict[str, _Storage] = {}
    obj = _unpickle(io.BytesIO(_record(zf, pickles[0])), "object", storages, zip_layout=True)
    for key, s in storages.items():
        nbytes = s.numel * s.stype.dtype.itemsize
        member = prefix + "data/" + key
        if member not in names:
            raise ValueError(f"storage record {member} is missing from the archive")
        size = zf.getinfo(member).file_size
        if size != nbytes:
            raise ValueError(f"storage record {member} holds {size} bytes, the object pickle "
                             f"says {s.numel} x {s.stype.dtype.itemsize} = {nbytes}")
        s.data = np.frombuffer(_record(zf, member), dtype=s.stype.dtype.newbyteorder(order))
    return obj, storages


def _record(zf: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    info = zf.getinfo(name)
    # Deflate expands at most ~1032:1: a larger claim is a lie (or a zip bomb).
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1032 * info.compress_size:
        raise ValueError(f"archive record {name}: implausible size {info.file_size}")
    if limit is not None and info.file_size > limit:
        raise ValueError(f"archive record {name} is {info.file_size} bytes")
    try:
        data = zf.read(name)
    except _ZIP_ERRORS as e:
        raise ValueError(f"corrupt archive record {name}: {e}") from None
    if len(data) != info.file_size:
        raise ValueError(f"archive record {name} is truncated")
    return data


def _out_itemsize(s: _Storage) -> int:
    return 4 if s.stype.bf16 else s.stype.dtype.itemsize


class _Budget:
    """Bytes the returned arrays may still take: the storages' own bytes (as returned, so
    bfloat16 counts as float32) plus MAX_EXTRA_BYTES, charged before each allocation."""

    def __init__(self, storages: Mapping[str, _Storage]) -> None:
        self.total = sum(s.numel * _out_itemsize(s) for s in storages.values())
        self.total += MAX_EXTRA_BYTES
        self.left = self.total

    def charge(self, t: _TensorRef) -> None:
        n = _out_itemsize(t.storage)
        for d in t.size:
            n *= d
        if n > self.left:
            raise ValueError(f"tensor of size {t.size} over storage {t.storage.key!r} would "
                             f"take the checkpoint's arrays beyond {self.total} bytes (the "
                             f"storages' bytes plus {MAX_EXTRA_BYTES} for expanded or "
                             "overlapping views, over the whole file)")
        self.left -= n


def _materialize(t: _TensorRef) -> np.ndarray:
    s = t.storage
    assert s.data is not None  # every referenced storage was read or the load raised
    itemsize = s.data.dtype.itemsize
    if 0 in t.size:
        out = np.empty(t.size, dtype=s.data.dtype.newbyteorder("="))
    else:
        view = np.lib.stride_tricks.as_strided(
            s.data[t.offset:], shape=t.size, strides=tuple(st * itemsize for st in t.stride),
            writeable=False)  # bounds were checked in _rebuild_tensor_v2
        out = np.array(view, dtype=s.data.dtype.newbyteorder("="), order="C")
    if s.stype.bf16:  # bfloat16 is the top half of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _resolve(obj: Any, memo: dict[Any, Any], budget: _Budget) -> Any:
    """The unpickled structure with every tensor replaced by its numpy array; `memo` maps
    objects (by id) and views (by storage, offset, size, stride) to what they became."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, (_TensorRef, _Storage)):
        t = obj if isinstance(obj, _TensorRef) else _TensorRef(obj, 0, (obj.numel,), (1,))
        view = ("view", t.storage.key, t.offset, t.size, t.stride)
        out: Any = memo.get(view)
        if out is None:
            budget.charge(t)
            out = memo[view] = _materialize(t)
    elif isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[k] = _resolve(v, memo, budget)
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = out
        out.extend(_resolve(v, memo, budget) for v in obj)
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, memo, budget) for v in obj)
    else:
        out = obj  # numbers, strings, bytes, None, sets of those
    memo[id(obj)] = out
    return out


def load_torch_object(f: PathOrFile) -> Any:
    """Read a `torch.save` file (zip or legacy layout) without running pickled code.

    Returns:
        The saved object with each tensor (and each Parameter) replaced by a C-contiguous
        numpy array in native byte order; bfloat16 comes back as float32. Tensors that are
        the same view of one storage share one array.

    Raises:
        ValueError: the file names a global outside the allow-list ("refusing to load
            global ..."), is truncated or malformed, or its views would expand beyond the
            storages' bytes plus MAX_EXTRA_BYTES in total.
    """
    if isinstance(f, (str, os.PathLike)):
        with open(f, "rb") as fh:
            return load_torch_object(fh)
    start = f.tell()
    if zipfile.is_zipfile(f):
        f.seek(start)
        try:
            with zipfile.ZipFile(f) as zf:
                obj, storages = _read_zip(zf)
        except _ZIP_ERRORS as e:  # a damaged directory or local header
            raise ValueError(f"corrupt zip checkpoint: {type(e).__name__}: {e}") from None
    else:
        f.seek(start)
        if f.read(262)[257:262] == b"ustar":
            raise ValueError("tar checkpoints (PyTorch < 0.4) are not supported")
        f.seek(start)
        obj, storages = _read_legacy(f)
    try:
        return _resolve(obj, {}, _Budget(storages))
    except RecursionError:
        raise ValueError("checkpoint object is nested too deeply") from None


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, np.ndarray):
        out[prefix[:-1]] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}{i}.", out)


def load_torch(f: PathOrFile) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint as a flat dict of name -> numpy array, safely.

    A state dict maps to itself; tensors nested in dicts or lists get dotted names
    (`{"model": {"w": t}}` -> `"model.w"`); non-tensor values (epochs, strings) are left out,
    `load_torch_object` keeps them.

    Raises:
        ValueError: as `load_torch_object`.
    """
    obj = load_torch_object(f)
    out: dict[str, np.ndarray] = {}
    try:
        _flatten(obj, "", out)
    except RecursionError:
        raise ValueError("checkpoint object is nested too deeply") from None
    return out
