"""Tests for minitl's own safetensors reader/writer (minitl/io/safetensors.py).

Round trips, interoperability with the reference `safetensors` package (byte-identical
files), atomic writes, one test per kind of corrupt header, and hypothesis fuzzing that
checks a damaged file either loads consistently or raises ValueError -- nothing else.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitl.io import safetensors as sft
from minitl.io.safetensors import load_file, load_metadata, read_header, save_file

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]
SHAPES = [(2, 3), (), (0, 3), (5,)]


def _sample(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


def _mixed() -> dict[str, np.ndarray]:
    return {f"t{i}.{np.dtype(d).name}": _sample(d, (3, 2), i) for i, d in enumerate(DTYPES)}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k, v in a.items():
        assert v.dtype == b[k].dtype, k
        assert v.shape == b[k].shape, k
        np.testing.assert_array_equal(v, b[k])


def _raw(header: Any, data: bytes = b"", length: int | None = None) -> bytes:
    """Build file bytes from a header (object -> compact JSON, or raw bytes) and data."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


def _entry(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype(tmp_path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
    arrays = {"x": _sample(dtype, shape), "y": _sample(dtype, shape, 1)}
    save_file(arrays, tmp_path / "a.safetensors")
    _assert_same(arrays, load_file(tmp_path / "a.safetensors"))


def test_round_trip_mixed_and_metadata(tmp_path: Path) -> None:
    arrays = _mixed()
    meta = {"format": "np", "note": "é \n \"quoted\" \\ \U0001F600", "": ""}
    save_file(arrays, tmp_path / "a.safetensors", metadata=meta)
    _assert_same(arrays, load_file(tmp_path / "a.safetensors"))
    assert load_metadata(tmp_path / "a.safetensors") == meta
    header = read_header(tmp_path / "a.safetensors")
    assert header["__metadata__"] == meta
    assert header["t1.float32"]["dtype"] == "F32" and header["t1.float32"]["shape"] == [3, 2]


def test_no_tensors_and_no_metadata(tmp_path: Path) -> None:
    save_file({}, tmp_path / "e.safetensors")
    assert load_file(tmp_path / "e.safetensors") == {}
    assert load_metadata(tmp_path / "e.safetensors") == {}


def test_noncontiguous_and_big_endian_inputs(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    arrays: dict[str, Any] = {
        "strided": base[:, ::2],
        "transposed": base.T,
        "fortran": np.asfortranarray(base),
        "big_f": base.astype(">f4"),
        "big_i": np.arange(5, dtype=">i8"),
        "scalar": np.float64(1.5),  # a numpy scalar is accepted as a 0-d array
    }
    save_file(arrays, tmp_path / "n.safetensors")
    out = load_file(tmp_path / "n.safetensors")
    for k, v in arrays.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].dtype == np.asarray(v).dtype.newbyteorder("=")
        assert out[k].dtype.isnative and out[k].flags.c_contiguous


def test_loaded_arrays_are_writable_owned_copies(tmp_path: Path) -> None:
    save_file({"a": np.ones(4, np.float32), "b": np.zeros((), np.int8)}, tmp_path / "w.st")
    out = load_file(tmp_path / "w.st")
    for arr in out.values():
        assert arr.flags.writeable
        arr[...] = 7
    (tmp_path / "w.st").unlink()  # the arrays outlive the file
    np.testing.assert_array_equal(out["a"], 7)


def test_bad_inputs_name_the_offender(tmp_path: Path) -> None:
    target = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="'c'.*complex"):
        save_file({"c": np.zeros(2, np.complex64)}, target)
    with pytest.raises(ValueError, match="'o'.*object"):
        save_file({"o": np.array([None, 1])}, target)
    with pytest.raises(ValueError, match="'l'.*list"):
        save_file({"l": [1.0, 2.0]}, target)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="tensor name 3"):
        save_file({3: np.zeros(1)}, target)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="reserved"):
        save_file({"__metadata__": np.zeros(1)}, target)
    with pytest.raises(ValueError, match="metadata value for key 'epoch'"):
        save_file({"x": np.zeros(1)}, target, metadata={"epoch": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="metadata key 1"):
        save_file({"x": np.zeros(1)}, target, metadata={1: "a"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="tensor name '\\\\ud800' is not encodable"):
        save_file({"\ud800": np.zeros(1)}, target)
    assert list(tmp_path.iterdir()) == []  # validation happens before any file is created


# ---------------------------------------------------------------------------- interop


def test_byte_identical_to_reference_writer(tmp_path: Path) -> None:
    stn = pytest.importorskip("safetensors.numpy")
    arrays = _mixed() | {"scalar": np.array(2.5), "empty": np.zeros((0, 4), np.int16),
                         "big": np.arange(3, dtype=">u4"), "ü": np.ones(3, np.float16)}
    for meta in (None, {}, {"k": "é\n\x01"}):  # >1 key: the reference orders them by hash
        save_file(arrays, tmp_path / "mine.st", metadata=meta)
        stn.save_file(arrays, str(tmp_path / "ref.st"), metadata=meta)
        assert (tmp_path / "mine.st").read_bytes() == (tmp_path / "ref.st").read_bytes()


def test_reference_reads_minitl_files(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.numpy import load_file as ref_load

    arrays = _mixed() | {"scalar": np.array(-1, np.int32), "empty": np.zeros((2, 0), bool)}
    meta = {"a": "1", "b": "two"}
    save_file(arrays, tmp_path / "m.safetensors", metadata=meta)
    _assert_same(arrays, ref_load(str(tmp_path / "m.safetensors")))
    with safe_open(str(tmp_path / "m.safetensors"), framework="np") as f:
        assert f.metadata() == meta


def test_minitl_reads_reference_files(tmp_path: Path) -> None:
    stn = pytest.importorskip("safetensors.numpy")
    arrays = _mixed() | {"scalar": np.array(3, np.uint16), "empty": np.zeros((0,), np.float64)}
    meta = {"x": "y", "z": ""}
    stn.save_file(arrays, str(tmp_path / "r.safetensors"), metadata=meta)
    _assert_same(arrays, load_file(tmp_path / "r.safetensors"))
    assert load_metadata(tmp_path / "r.safetensors") == meta


def test_bf16_from_torch_loads_as_float32(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    values = torch.tensor([[1.0, -2.5, 3.140625], [1e-3, 65504.0, -0.0]], dtype=torch.bfloat16)
    stt.save_file({"w": values, "f": torch.ones(2)}, str(tmp_path / "bf.safetensors"))
    out = load_file(tmp_path / "bf.safetensors")
    assert out["w"].dtype == np.float32 and out["w"].shape == (2, 3)
    np.testing.assert_array_equal(out["w"], values.float().numpy())  # exact upcast
    assert np.signbit(out["w"][1, 2])
    assert out["w"].flags.writeable
    assert read_header(tmp_path / "bf.safetensors")["w"]["dtype"] == "BF16"


# ---------------------------------------------------------------------------- atomic write


def test_failed_write_leaves_target_and_no_temp(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt.safetensors"
    save_file({"old": np.ones(3, np.float32)}, target)
    before = target.read_bytes()

    def half_then_fail(f: Any, items: Any) -> None:
        f.write(b"\x00" * 5)
        raise OSError("disk full")

    monkeypatch.setattr(sft, "_write_arrays", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_file({"new": np.zeros(1000, np.float64)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def test_failed_rename_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replace(src: str, dst: str) -> None:
        raise PermissionError("read-only target")

    monkeypatch.setattr(sft.os, "replace", no_replace)
    with pytest.raises(PermissionError):
        save_file({"a": np.ones(2)}, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_existing_file_with_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "c.safetensors"
    target.write_bytes(b"garbage")
    save_file({"a": np.arange(3)}, str(target))
    np.testing.assert_array_equal(load_file(str(target))["a"], np.arange(3))
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# ---------------------------------------------------------------------------- corrupt files

GOOD_DATA = np.arange(2, dtype="<f4").tobytes()

CORRUPT = [
    ("short", b"\x01\x00\x00", "too short"),
    ("empty", b"", "too short"),
    ("len_huge", struct.pack("<Q", 2**63) + b"{}", "exceeds"),
    ("len_over_cap", struct.pack("<Q", sft.MAX_HEADER_SIZE + 1), "exceeds"),
    ("len_past_eof", _raw(b"{}", length=50), "larger than the file"),
    ("not_utf8", _raw(b'{"\xff\xfe": 1}'), "not valid UTF-8"),
    ("not_json", _raw(b"{not json"), "not valid JSON"),
    ("deep_json", _raw(b"[" * 100_000), "not valid JSON"),
    ("huge_int_literal", _raw(b'{"a": ' + b"9" * 5000 + b"}"), "not valid JSON"),
    ("not_object", _raw([1, 2]), "not a JSON object"),
    ("entry_not_object", _raw({"a": [1]}), "'a' is not an object"),
    ("missing_dtype", _raw({"a": {"shape": [2], "data_offsets": [0, 8]}}, GOOD_DATA),
     "missing key 'dtype'"),
    ("missing_offsets", _raw({"a": {"dtype": "F32", "shape": [2]}}, GOOD_DATA),
     "missing key 'data_offsets'"),
    ("unknown_dtype", _raw({"a": _entry(dtype="F128")}, GOOD_DATA), "unknown or unsupported"),
    ("dtype_not_str", _raw({"a": _entry(dtype=4)}, GOOD_DATA), "unknown or unsupported"),
    ("shape_negative", _raw({"a": _entry(shape=[-2])}, GOOD_DATA), "invalid shape"),
    ("shape_float", _raw({"a": _entry(shape=[2.0])}, GOOD_DATA), "invalid shape"),
    ("shape_bool", _raw({"a": _entry(shape=[True, True])}, GOOD_DATA), "invalid shape"),
    ("shape_not_list", _raw({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}},
                            GOOD_DATA), "invalid shape"),
    ("shape_too_many_dims", _raw({"a": _entry(shape=[1] * 65, offsets=[0, 4])}, GOOD_DATA),
     "dims"),
    ("offsets_three", _raw({"a": _entry(offsets=[0, 4, 8])}, GOOD_DATA), "invalid data_offsets"),
    ("offsets_str", _raw({"a": _entry(offsets=["0", "8"])}, GOOD_DATA), "invalid data_offsets"),
    ("offsets_negative", _raw({"a": _entry(offsets=[-8, 0])}, GOOD_DATA), "outside"),
    ("offsets_reversed", _raw({"a": _entry(offsets=[8, 0])}, GOOD_DATA), "outside"),
    ("offsets_past_end", _raw({"a": _entry(shape=[4], offsets=[0, 16])}, GOOD_DATA), "outside"),
    ("offsets_huge", _raw({"a": _entry(shape=[2**62], offsets=[0, 2**64])}, GOOD_DATA),
     "outside"),
    ("byte_count", _raw({"a": _entry(shape=[3], offsets=[0, 8])}, GOOD_DATA),
     "byte count 8 does not match"),
    ("byte_count_overflowing_shape",
     _raw({"a": _entry(shape=[2**40, 2**40, 2**40], offsets=[0, 8])}, GOOD_DATA),
     "does not match"),
    ("dim_past_int64", _raw({"a": _entry(shape=[0, 2**64], offsets=[0, 0])}), "invalid shape"),
    ("empty_but_too_large_for_numpy",
     _raw({"a": _entry(shape=[0, 2**62, 2**62], offsets=[0, 0])}), "too large for numpy"),
    ("overlap", _raw({"a": _entry(shape=[2], offsets=[0, 8]),
                      "b": _entry(shape=[1], offsets=[4, 8])}, GOOD_DATA), "overlapping"),
    ("metadata_not_object", _raw({"__metadata__": ["a"]}), "__metadata__"),
    ("metadata_not_str", _raw({"__metadata__": {"epoch": 3}}), "__metadata__"),
    ("duplicate_tensor", _raw(b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
                              b' "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
                              GOOD_DATA), "duplicate key 'a'"),
    ("duplicate_field", _raw(b'{"a": {"dtype": "F32", "dtype": "I32", "shape": [2], '
                             b'"data_offsets": [0, 8]}}', GOOD_DATA), "duplicate key 'dtype'"),
]


@pytest.mark.parametrize(("blob", "match"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_file_raises_value_error(tmp_path: Path, blob: bytes, match: str) -> None:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(blob)
    for reader in (load_file, read_header, load_metadata):
        with pytest.raises(ValueError, match=match) as info:
            reader(path)
        assert str(path) in str(info.value)  # the message names the file


def test_lenient_cases_still_load(tmp_path: Path) -> None:
    # Gaps, trailing bytes, empty tensors at any offset and a null __metadata__ are harmless.
    data = np.arange(4, dtype="<f4").tobytes() + b"junk"
    header = {"__metadata__": None, "a": _entry(shape=[1], offsets=[4, 8]),
              "e": _entry(shape=[0, 5], offsets=[6, 6]), "b": _entry(shape=[1], offsets=[12, 16])}
    (tmp_path / "l.st").write_bytes(_raw(header, data))
    out = load_file(tmp_path / "l.st")
    assert out["a"].tolist() == [1.0] and out["b"].tolist() == [3.0] and out["e"].shape == (0, 5)
    assert load_metadata(tmp_path / "l.st") == {}


def test_bool_bytes_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "b.st").write_bytes(_raw({"m": _entry("BOOL", [3], [0, 3])}, b"\x00\x02\xff"))
    out = load_file(tmp_path / "b.st")["m"]
    assert out.dtype == np.bool_ and out.tolist() == [False, True, True]
    assert out.view(np.uint8).tolist() == [0, 1, 1]


# ---------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=150, deadline=500,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_blob() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.st"
        save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int64),
                   "m": np.array([True, False]), "s": np.array(1.5, np.float16)},
                  path, metadata={"k": "v"})
        return path.read_bytes()


VALID = _valid_blob()


def _check_load(path: Path) -> None:
    """Loading either raises ValueError or returns arrays consistent with the header."""
    try:
        out = load_file(path)
    except ValueError:
        return
    header = read_header(path)
    assert sorted(out) == sorted(k for k in header if k != "__metadata__")
    for name, arr in out.items():
        assert arr.shape == tuple(header[name]["shape"])
        stored = header[name]["dtype"]
        expected = {"BF16": np.dtype(np.float32), "BOOL": np.dtype(np.bool_)}.get(
            stored, sft._DTYPES[stored].newbyteorder("="))
        assert arr.dtype == expected


@FUZZ
@given(cut=st.integers(0, len(VALID)))
def test_fuzz_truncated(tmp_path: Path, cut: int) -> None:
    (tmp_path / "f.st").write_bytes(VALID[:cut])
    _check_load(tmp_path / "f.st")


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)),
                      min_size=1, max_size=8))
def test_fuzz_byte_flips(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    blob = bytearray(VALID)
    for pos, mask in flips:
        blob[pos] ^= mask
    (tmp_path / "f.st").write_bytes(bytes(blob))
    _check_load(tmp_path / "f.st")


_ints = st.one_of(st.integers(-10, 40), st.integers(-(2**70), 2**70),
                  st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64, -1]))
_json = st.recursive(
    st.none() | st.booleans() | _ints | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids,
                                                              max_size=4),
    max_leaves=12,
)
_entries = st.fixed_dictionaries(
    {"dtype": st.sampled_from([*sft._DTYPES, "F8_E4M3", "C64", "f32", ""]) | _json,
     "shape": st.lists(_ints, max_size=4) | _json,
     "data_offsets": st.lists(_ints, min_size=2, max_size=2) | _json},
    optional={"extra": _json},
)
_headers = st.one_of(
    _json,
    st.dictionaries(st.sampled_from(["w", "b", "m", "x", "__metadata__"]),
                    _entries | _json | st.dictionaries(st.text(max_size=3),
                                                       st.text(max_size=3)), max_size=5),
)


@FUZZ
@given(header=_headers, data_len=st.integers(0, 64), lie=st.none() | _ints.filter(lambda n: n >= 0))
def test_fuzz_random_header(tmp_path: Path, header: Any, data_len: int, lie: int | None) -> None:
    hb = json.dumps(header).encode()
    length = len(hb) if lie is None else lie % 2**64
    (tmp_path / "f.st").write_bytes(_raw(hb, bytes(range(data_len)), length=length))
    _check_load(tmp_path / "f.st")


# ---------------------------------------------------------------------------- Tensor layer


def test_tensor_save_load(tmp_path: Path) -> None:
    tensor_mod = pytest.importorskip("minitl.tensor")
    import minitl.io as mio

    Tensor = tensor_mod.Tensor
    state = {"w": Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True),
             "n": Tensor(np.array(7, np.int64)), "raw": np.ones(2, np.float16)}
    mio.save(state, tmp_path / "t.safetensors", metadata={"step": "10"})
    out = mio.load(tmp_path / "t.safetensors")
    assert set(out) == {"w", "n", "raw"}
    for k, v in out.items():
        assert isinstance(v, Tensor) and not v.requires_grad and v.device == "cpu"
        np.testing.assert_array_equal(v.numpy(), np.asarray(
            state[k].numpy() if isinstance(state[k], Tensor) else state[k]))
        assert v.dtype == np.asarray(state[k]).dtype
    assert mio.load_metadata(tmp_path / "t.safetensors") == {"step": "10"}
    with pytest.raises(ValueError, match="'bad'.*list"):
        mio.save({"bad": [1, 2]}, tmp_path / "u.safetensors")
    assert mio.save_file is save_file and mio.load_file is load_file
