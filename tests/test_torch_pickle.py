"""PyTorch checkpoint reader: files written by torch (legacy and zip layouts) read back
bit-exactly; hostile pickles are refused with nothing executed; truncated or corrupt files
raise ValueError, never crash or allocate what the file does not hold.

Checkpoints are also built here opcode by opcode (no torch needed), so every field a
malicious or damaged file could get wrong can be set by hand.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minitl.io.torch_pickle import (
    LEGACY_MAGIC,
    MAX_EXPANDED_ELEMENTS,
    load_torch,
    load_torch_object,
)

try:
    import torch
except ImportError:  # torch is only in the test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

# ---- a checkpoint writer built from pickle opcodes --------------------------------------

_TYPES = {np.dtype("f4"): "FloatStorage", np.dtype("f8"): "DoubleStorage",
          np.dtype("i8"): "LongStorage", np.dtype("i4"): "IntStorage",
          np.dtype("u1"): "ByteStorage", np.dtype("f2"): "HalfStorage"}


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _value(x: Any) -> bytes:
    """The opcodes that push `x` (a plain value), without PROTO and STOP."""
    return pickle.dumps(x, protocol=2)[2:-1]


def _tensor_ops(key: str, stype: str, numel: int, offset: int, size: tuple, stride: tuple,
                zip_layout: bool, parameter: bool = False) -> bytes:
    pid = (b"(" + _value("storage") + _global("torch", stype) + _value(key) + _value("cpu")
           + _value(numel) + (b"" if zip_layout else b"N") + b"tQ")
    ops = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + _value(offset)
           + _value(tuple(size)) + _value(tuple(stride)) + b"\x89"
           + _global("collections", "OrderedDict") + b")RtR")
    if parameter:
        ops = (_global("torch._utils", "_rebuild_parameter") + b"(" + ops + b"\x88"
               + _global("collections", "OrderedDict") + b")RtR")
    return ops


def build(tensors: dict[str, dict[str, Any]], storages: dict[str, np.ndarray],
          fmt: str = "legacy", *, numel: dict[str, int] | None = None,
          counts: dict[str, int] | None = None, keys: list[str] | None = None,
          extra_ops: bytes = b"", byteorder: str = "little") -> bytes:
    """A checkpoint {name: tensor} over raw `storages` (key -> 1-D array).

    Each tensor is {"key", "offset", "size", "stride"} (+ "parameter"); `numel` overrides
    the element count in a persistent id, `counts` the one before the legacy data, `keys`
    the legacy key list; `extra_ops` go inside the dict (a key and a value)."""
    numel = numel or {}
    zip_layout = fmt == "zip"
    body = b""
    for name, t in tensors.items():
        arr = storages[t["key"]]
        body += _value(name) + _tensor_ops(
            t["key"], _TYPES[arr.dtype.newbyteorder("=")], numel.get(t["key"], arr.size),
            t.get("offset", 0),
            t["size"], t.get("stride", _contiguous(t["size"])), zip_layout,
            t.get("parameter", False))
    main = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + extra_ops
            + b"u.")
    if zip_layout:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("archive/data.pkl", main)
            zf.writestr("archive/byteorder", byteorder)
            for key, arr in storages.items():
                zf.writestr(f"archive/data/{key}", arr.tobytes())
            zf.writestr("archive/version", "3\n")
        return buf.getvalue()
    keys = sorted(storages) if keys is None else keys
    out = (pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
           + pickle.dumps({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
           + main + pickle.dumps(keys, protocol=2))
    for key in keys:
        arr = storages[key]
        out += struct.pack("<q", (counts or {}).get(key, arr.size)) + arr.tobytes()
    return out


def _contiguous(size: tuple) -> tuple:
    stride, acc = [], 1
    for n in reversed(size):
        stride.append(acc)
        acc *= n
    return tuple(reversed(stride))


def _load(data: bytes) -> dict[str, np.ndarray]:
    return load_torch(io.BytesIO(data))


BASE = np.arange(12, dtype=np.float32)


# ---- reading what the writer above produces (no torch) ----------------------------------

@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_views_offsets_and_shared_storage(fmt: str) -> None:
    data = build({"full": {"key": "0", "size": (3, 4)},
                  "transposed": {"key": "0", "size": (4, 3), "stride": (1, 4)},
                  "offset": {"key": "0", "offset": 5, "size": (2, 3), "stride": (3, 1)},
                  "scalar": {"key": "1", "size": ()},
                  "param": {"key": "0", "size": (12,), "parameter": True}},
                 {"0": BASE, "1": np.array([7], dtype=np.int64)}, fmt)
    out = _load(data)
    np.testing.assert_array_equal(out["full"], BASE.reshape(3, 4))
    np.testing.assert_array_equal(out["transposed"], BASE.reshape(3, 4).T)
    np.testing.assert_array_equal(out["offset"], BASE[5:11].reshape(2, 3))
    assert out["scalar"].shape == () and out["scalar"].dtype == np.int64 and out["scalar"] == 7
    np.testing.assert_array_equal(out["param"], BASE)
    for arr in out.values():  # copies, not views into the file buffer
        assert arr.flags.c_contiguous and arr.flags.owndata and arr.flags.writeable


def test_big_endian_zip_is_byteswapped() -> None:
    data = build({"w": {"key": "0", "size": (12,)}}, {"0": BASE.astype(">f4")}, "zip",
                 byteorder="big")
    out = _load(data)["w"]
    np.testing.assert_array_equal(out, BASE)
    assert out.dtype == np.float32 and out.dtype.isnative


def test_nested_structures_flatten_to_dotted_names() -> None:
    inner = _value("inner") + (_global("collections", "OrderedDict") + b")R(" + _value("w")
                               + _tensor_ops("0", "FloatStorage", 12, 0, (12,), (1,), False)
                               + b"u")
    extra = inner + _value("epoch") + _value(3)
    data = build({}, {"0": BASE}, "legacy", extra_ops=extra)
    assert list(_load(data)) == ["inner.w"]
    obj = load_torch_object(io.BytesIO(data))
    assert obj["epoch"] == 3 and isinstance(obj["inner"], collections.OrderedDict)


# ---- files written by torch itself ----------------------------------------------------------

def _torch_state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return collections.OrderedDict(
        weight=torch.randn(4, 3, 3, 3, generator=g),
        transposed=base.t(),  # non-contiguous view
        sliced=base[1:4, ::2],  # offset and stride
        shared=base,  # same storage as the two views
        param=torch.nn.Parameter(torch.randn(3, generator=g)),
        scalar=torch.tensor(2.5, dtype=torch.float64),
        count=torch.tensor(7),
        ints=torch.arange(10, dtype=torch.int32),
        bytes_=torch.arange(5, dtype=torch.uint8),
        flags=torch.tensor([True, False, True]),
        half=torch.randn(4, generator=g).half(),
        bf16=torch.randn(4, generator=g).bfloat16(),
        empty=torch.zeros(0, 3),
    )


@needs_torch
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reads_torch_save_bit_exactly(tmp_path: Path, legacy: bool) -> None:
    state = _torch_state()
    path = tmp_path / "model.pt"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    out = load_torch(path)
    assert list(out) == list(state)
    for name, t in state.items():
        want = (t.detach().float() if t.dtype == torch.bfloat16 else t.detach()).numpy()
        assert out[name].dtype == want.dtype, name
        assert out[name].shape == want.shape, name
        np.testing.assert_array_equal(out[name], want, err_msg=name)


@needs_torch
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reads_a_torch_module_state_dict(tmp_path: Path, legacy: bool) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                              torch.nn.Flatten(), torch.nn.LazyLinear(4))
    net(torch.zeros(1, 3, 6, 6))
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    out = load_torch(path)
    ref = torch.load(path, weights_only=True)
    assert list(out) == list(ref)  # _metadata (set on the OrderedDict by BUILD) is dropped
    for k, v in ref.items():
        np.testing.assert_array_equal(out[k], v.numpy())


@needs_torch
def test_nested_checkpoint_from_torch(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2)}, "layers": [torch.zeros(1)], "epoch": 4,
                "name": "run"}, path)
    assert sorted(load_torch(path)) == ["layers.0", "model.w"]
    obj = load_torch_object(path)
    assert obj["epoch"] == 4 and obj["name"] == "run"


# ---- hostile pickles ------------------------------------------------------------------------

class _Payload:
    """Pickles as a call of `fn(*args)`: what an attacker's checkpoint does."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _payloads(sentinel: Path) -> dict[str, Any]:
    s = str(sentinel)
    return {
        "os.system": _Payload(os.system, f"touch {s}"),
        "builtins.eval": _Payload(builtins.eval, f"open({s!r}, 'w').close()"),
        "builtins.exec": _Payload(builtins.exec, f"open({s!r}, 'w').close()"),
        "subprocess.call": _Payload(subprocess.call, ["touch", s]),
        "builtins.open": _Payload(builtins.open, s, "w"),
        "getattr": _Payload(builtins.getattr, collections.OrderedDict, "fromkeys"),
    }


def _refuses(data: bytes, sentinel: Path) -> None:
    with pytest.raises(ValueError, match="refusing to load global"):
        _load(data)
    assert not sentinel.exists(), "pickled code ran"


@pytest.mark.parametrize("which", sorted(_payloads(Path("x"))))
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_bare_hostile_pickle_is_refused(tmp_path: Path, which: str, protocol: int) -> None:
    sentinel = tmp_path / "pwned"
    payload = _payloads(sentinel)[which]
    data = pickle.dumps({"w": payload}, protocol=protocol)
    assert _contains_global(data)
    _refuses(data, sentinel)  # not even a torch file: refused at the first global


def _contains_global(data: bytes) -> bool:
    import pickletools

    return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST")
               for op, _, _ in pickletools.genops(data))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize("which", ["os.system", "builtins.eval", "subprocess.call"])
def test_hostile_value_inside_a_valid_checkpoint(tmp_path: Path, fmt: str, which: str) -> None:
    sentinel = tmp_path / "pwned"
    evil = _value("evil") + pickle.dumps(_payloads(sentinel)[which], protocol=2)[2:-1]
    data = build({"w": {"key": "0", "size": (12,)}}, {"0": BASE}, fmt, extra_ops=evil)
    _refuses(data, sentinel)


@pytest.mark.parametrize("module,name", [
    ("torch", "load"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch.nn", "Module"), ("torch", "Tensor"), ("torch", "FloatStorage.__init__"),
    ("collections", "namedtuple"), ("copyreg", "_reconstructor"), ("numpy", "frombuffer"),
    ("builtins", "__import__"), ("posix", "system"), ("nt", "system"),
])
def test_near_miss_globals_are_refused(tmp_path: Path, module: str, name: str) -> None:
    data = b"\x80\x02" + _global(module, name) + b")R."
    _refuses(data, tmp_path / "none")


def test_stack_global_and_nested_payloads_are_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    payload = _payloads(sentinel)["os.system"]
    nested = {"a": [1, (2, {"b": collections.OrderedDict(c=payload)})]}
    _refuses(pickle.dumps(nested, protocol=4), sentinel)  # STACK_GLOBAL, memoised
    _refuses(pickle.dumps(nested, protocol=5), sentinel)


def test_allowed_globals_cannot_be_abused(tmp_path: Path) -> None:
    # A storage type is a dtype marker, not a callable.
    with pytest.raises(ValueError, match="refusing to call"):
        _load(b"\x80\x02" + _global("torch", "FloatStorage") + _value((10,)) + b"R.")
    # _rebuild_tensor_v2 only accepts a storage from a persistent id.
    bad = (b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2")
           + _value(("not a storage", 0, (1,), (1,), False, None)) + b"R.")
    with pytest.raises(ValueError, match="expected a storage"):
        _load(bad)
    # BUILD cannot set attributes on the stand-ins.
    ops = _tensor_ops("0", "FloatStorage", 12, 0, (12,), (1,), False)
    data = build({}, {"0": BASE}, extra_ops=_value("x") + ops + _value({"offset": 100}) + b"b")
    with pytest.raises(ValueError):
        _load(data)


def test_persistent_ids_outside_the_object_pickle_are_refused() -> None:
    with pytest.raises(ValueError, match="persistent id"):
        _load(b"\x80\x02" + _value("x") + b"Q.")


# ---- corrupt and truncated files ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_every_truncation_raises_value_error(fmt: str) -> None:
    data = build({"a": {"key": "0", "size": (3, 4)}, "b": {"key": "1", "size": (2,)}},
                 {"0": BASE, "1": np.array([1, 2], dtype=np.int64)}, fmt)
    assert set(_load(data)) == {"a", "b"}
    for n in range(len(data)):
        with pytest.raises(ValueError):
            _load(data[:n])


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_random_corruption_never_escapes_as_another_error(fmt: str) -> None:
    data = build({"a": {"key": "0", "size": (3, 4)}}, {"0": BASE}, fmt)
    rng = np.random.default_rng(0)
    for _ in range(400):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), size=rng.integers(1, 4)):
            bad[i] = int(rng.integers(0, 256))
        try:
            out = _load(bytes(bad))
        except ValueError:
            continue
        for arr in out.values():  # a flip inside the data region still loads
            assert isinstance(arr, np.ndarray)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize("tensor,match", [
    ({"size": (13,)}, "reads element 12"),  # one past the end
    ({"offset": 12, "size": (1,)}, "reads element 12"),
    ({"size": (4, 4), "stride": (4, 1)}, "reads element 15"),
    ({"size": (3,), "stride": (6,)}, "reads element 12"),
    ({"size": (2, 2), "stride": (1,)}, "differ in length"),
    ({"size": (-1,)}, "non-negative"),
    ({"size": (2,), "stride": (-1,)}, "non-negative"),
    ({"offset": -1, "size": (1,)}, "non-negative"),
    ({"size": (1 << 40, 1 << 40), "stride": (0, 0)}, "expand beyond"),
])
def test_out_of_bounds_views_are_refused(fmt: str, tensor: dict, match: str) -> None:
    data = build({"w": {"key": "0", **tensor}}, {"0": BASE}, fmt)
    with pytest.raises(ValueError, match=match):
        _load(data)


def test_expanded_views_within_the_cap_load() -> None:
    data = build({"w": {"key": "0", "size": (5, 12), "stride": (0, 1)}}, {"0": BASE})
    np.testing.assert_array_equal(_load(data)["w"], np.broadcast_to(BASE, (5, 12)))
    assert MAX_EXPANDED_ELEMENTS >= 60


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_huge_declared_storage_allocates_nothing(fmt: str) -> None:
    data = build({"w": {"key": "0", "size": (4,)}}, {"0": BASE}, fmt, numel={"0": 1 << 50})
    with pytest.raises(ValueError):
        _load(data)


def test_legacy_counts_and_keys_must_agree() -> None:
    storages = {"0": BASE}
    with pytest.raises(ValueError, match="the file says 13 elements"):
        _load(build({"w": {"key": "0", "size": (4,)}}, storages, counts={"0": 13}))
    with pytest.raises(ValueError, match="does not match"):
        _load(build({"w": {"key": "0", "size": (4,)}}, storages, keys=[]))
    with pytest.raises(ValueError, match="truncated"):
        _load(build({"w": {"key": "0", "size": (4,)}}, storages, counts={"0": 1 << 60},
                    numel={"0": 1 << 60}))


def test_legacy_header_checks() -> None:
    good = build({"w": {"key": "0", "size": (4,)}}, {"0": BASE})
    magic = pickle.dumps(LEGACY_MAGIC, protocol=2)
    with pytest.raises(ValueError, match="magic number"):
        _load(pickle.dumps(12345, protocol=2) + good[len(magic):])
    proto = pickle.dumps(1001, protocol=2)
    with pytest.raises(ValueError, match="protocol version"):
        _load(magic + pickle.dumps(1002, protocol=2) + good[len(magic) + len(proto):])
    with pytest.raises(ValueError):
        _load(b"")
    with pytest.raises(ValueError):
        _load(b"PK\x03\x04 not really a zip")


def test_zip_records_must_match_the_pickle() -> None:
    data = build({"w": {"key": "0", "size": (4,)}}, {"0": BASE}, "zip")
    zf = zipfile.ZipFile(io.BytesIO(data))
    members = {n: zf.read(n) for n in zf.namelist()}

    def rezip(**changes: bytes | None) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as out:
            for n, b in {**members, **changes}.items():
                if b is not None:
                    out.writestr(n, b)
        return buf.getvalue()

    with pytest.raises(ValueError, match="missing"):
        _load(rezip(**{"archive/data/0": None}))
    with pytest.raises(ValueError, match="holds 44 bytes"):
        _load(rezip(**{"archive/data/0": BASE[:11].tobytes()}))
    with pytest.raises(ValueError, match="data.pkl"):
        _load(rezip(**{"archive/data.pkl": None}))
    with pytest.raises(ValueError, match="byteorder"):
        _load(rezip(**{"archive/byteorder": b"middle"}))


def test_a_cyclic_structure_loads_and_deep_nesting_raises() -> None:
    cyc: list[Any] = []
    cyc.append(cyc)
    obj = load_torch_object(io.BytesIO(build({}, {}, extra_ops=_value("c")
                                             + _value(cyc))))
    assert obj["c"][0] is obj["c"]
    n = 100_000  # EMPTY_LIST n times, then APPEND n - 1 times: lists nested n deep
    deep = _value("d") + b"]" * n + b"a" * (n - 1)
    with pytest.raises(ValueError):
        load_torch(io.BytesIO(build({}, {}, extra_ops=deep)))
