"""GGUF: the reader and writer on tiny files written here, the dequantizers against hand-made
blocks and against the `gguf` package, and (when the asset is cached) every tensor of the real
SmolLM2 file against the `gguf` package's reader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from minitl import assets
from minitl.io.gguf import read_gguf
from minitl.io.gguf_quants import dequantize, quantize, row_bytes, type_info
from minitl.io.gguf_write import write_gguf

RNG = np.random.default_rng(0)


def _f16(v: float) -> bytes:
    return np.float16(v).tobytes()


def test_hand_made_blocks() -> None:
    codes = np.arange(32) % 16
    nib = bytes(int(codes[i]) | (int(codes[i + 16]) << 4) for i in range(16))
    q41 = np.frombuffer(_f16(0.5) + _f16(-1.0) + nib, np.uint8)
    np.testing.assert_array_equal(dequantize(q41, "Q4_1", (32,)), 0.5 * codes - 1.0)
    q40 = np.frombuffer(_f16(2.0) + nib, np.uint8)
    np.testing.assert_array_equal(dequantize(q40, "Q4_0", (32,)), 2.0 * (codes - 8))
    ints = np.arange(-16, 16, dtype=np.int8)
    q80 = np.frombuffer(_f16(0.25) + ints.tobytes(), np.uint8)
    np.testing.assert_array_equal(dequantize(q80, "Q8_0", (32,)), 0.25 * ints)
    bf = np.array([1.5, -2.25], np.float32).view(np.uint32) >> 16
    np.testing.assert_array_equal(
        dequantize(bf.astype("<u2").view(np.uint8), "BF16", (2,)), [1.5, -2.25])


@pytest.mark.parametrize("t,tol", [("Q8_0", 0.01), ("Q4_0", 0.15), ("Q4_1", 0.1),
                                   ("F16", 1e-3), ("F32", 0.0)])
def test_quantize_round_trip_within_the_step(t: str, tol: float) -> None:
    x = RNG.standard_normal((5, 96)).astype(np.float32)
    q = quantize(x, t)
    assert q.shape == (5, row_bytes(t, 96)) and q.dtype == np.uint8
    err = np.abs(dequantize(q, t, x.shape) - x) / np.abs(x).max()
    assert err.max() <= tol


def test_zero_blocks_and_sizes() -> None:
    z = np.zeros((2, 64), np.float32)
    for t in ("Q8_0", "Q4_0", "Q4_1"):
        np.testing.assert_array_equal(dequantize(quantize(z, t), t, z.shape), z)
    assert type_info("Q4_1").type_size == 20 and type_info(8).name == "Q8_0"
    with pytest.raises(ValueError, match="whole number"):
        row_bytes("Q4_0", 48)
    with pytest.raises(ValueError, match="needs 40 bytes"):
        dequantize(np.zeros(39, np.uint8), "Q4_1", (64,))
    with pytest.raises(NotImplementedError, match="Q6_K"):
        dequantize(np.zeros(210, np.uint8), "Q6_K", (256,))
    with pytest.raises(ValueError, match="unknown ggml tensor type"):
        type_info(99)


def tiny_file(path: Path, **extra: object) -> dict[str, np.ndarray]:
    """A small GGUF with one tensor of each type minitl reads and metadata of each kind."""
    x = {n: RNG.standard_normal((3, 64)).astype(np.float32) for n in ("a", "b", "c", "d", "e")}
    meta = {"general.architecture": "llama", "u": 7, "neg": -3, "big": 1 << 40, "f": 0.5,
            "flag": False, "s": "héllo", "ints": ("ARRAY", ("INT32", [1, -2, 3])),
            "words": ["x", "", "zz"], "nested": [[1, 2], [3]], "d": ("FLOAT64", 0.25), **extra}
    write_gguf(path, meta, {"a": ("Q4_1", x["a"]), "b": ("Q8_0", x["b"]),
                            "c": ("Q4_0", x["c"]), "d": ("F16", x["d"]), "e": x["e"]})
    return x


def test_write_then_read(tmp_path: Path) -> None:
    x = tiny_file(tmp_path / "t.gguf")
    f = read_gguf(tmp_path / "t.gguf")
    assert f.version == 3 and f.alignment == 32 and f.data_offset % 32 == 0
    m = f.metadata
    assert (m["u"], m["neg"], m["big"], m["f"], m["flag"], m["s"]) == \
        (7, -3, 1 << 40, 0.5, False, "héllo")
    assert m["ints"].dtype == np.int32 and m["ints"].tolist() == [1, -2, 3]
    assert m["words"] == ["x", "", "zz"] and [a.tolist() for a in m["nested"]] == [[1, 2], [3]]
    assert m["d"] == 0.25 and f.metadata_types["d"] == 12 and f.metadata_types["big"] == 10
    for name, t in zip("abcde", ("Q4_1", "Q8_0", "Q4_0", "F16", "F32")):
        info = f.tensors[name]
        assert info.type.name == t and info.shape == (3, 64) and info.offset % 32 == 0
        raw = f.raw(name)
        assert raw.shape == (3, row_bytes(t, 64)) and not raw.flags.writeable
        want = dequantize(quantize(x[name], t), t, (3, 64))
        np.testing.assert_array_equal(f.tensor(name), want)
    assert "a" in f and "zz" not in f
    with pytest.raises(KeyError, match="no tensor 'zz'"):
        f.tensor("zz")


def test_alignment_and_empty_tensors(tmp_path: Path) -> None:
    p = tmp_path / "a.gguf"
    write_gguf(p, {}, {"w": ("Q8_0", np.ones((2, 32), np.float32)),
                       "empty": np.zeros((0, 4), np.float32)}, alignment=64)
    f = read_gguf(p)
    assert f.alignment == 64 and f.data_offset % 64 == 0
    assert f.tensor("empty").shape == (0, 4)
    np.testing.assert_allclose(f.tensor("w"), np.ones((2, 32)), rtol=1e-3)  # f16 scale


def test_reads_version_2(tmp_path: Path) -> None:
    p = tmp_path / "v2.gguf"
    tiny_file(p)
    data = bytearray(p.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    p.write_bytes(bytes(data))
    assert read_gguf(p).version == 2


# ---- the gguf package as the reference --------------------------------------------------------

@pytest.mark.parametrize("t", ["Q4_0", "Q4_1", "Q8_0", "F16", "F32"])
def test_against_the_gguf_package(t: str) -> None:
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as gdq
    from gguf.quants import quantize as gq

    qt = getattr(gguf.GGMLQuantizationType, t)
    x = (RNG.standard_normal((9, 128)) * RNG.uniform(0.01, 10, (9, 1))).astype(np.float32)
    x[0] = 0.0
    ours = quantize(x, t)
    if t.startswith("Q"):  # the package returns F16/F32 as arrays of that dtype
        np.testing.assert_array_equal(ours, gq(x, qt))
    np.testing.assert_array_equal(dequantize(ours, t, x.shape), gdq(ours, qt).reshape(x.shape))


def test_files_read_by_the_gguf_package(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    x = tiny_file(tmp_path / "t.gguf")
    r = gguf.GGUFReader(tmp_path / "t.gguf")
    assert r.fields["s"].contents() == "héllo" and r.fields["words"].contents() == ["x", "", "zz"]
    got = {t.name: (t.tensor_type.name, gguf.quants.dequantize(t.data, t.tensor_type))
           for t in r.tensors}
    for name, t in zip("abcde", ("Q4_1", "Q8_0", "Q4_0", "F16", "F32")):
        assert got[name][0] == t
        np.testing.assert_array_equal(got[name][1].reshape(3, 64),
                                      dequantize(quantize(x[name], t), t, (3, 64)))


def _real_file() -> Path:
    if not assets.is_cached("smollm2-135m"):
        pytest.skip("the smollm2-135m asset is not cached (minitl.assets.path fetches it)")
    return assets.path("smollm2-135m")


def test_real_file_layout() -> None:
    """What the file holds, read by minitl alone (the slow test compares with gguf)."""
    f = read_gguf(_real_file())
    assert f.version == 3 and f.alignment == 32 and len(f.tensors) == 272
    assert f.metadata["llama.block_count"] == 30 and len(f.metadata["tokenizer.ggml.tokens"]) \
        == 49152
    emb = f.tensors["token_embd.weight"]
    assert emb.type.name == "Q8_0" and emb.shape == (49152, 576) and emb.nbytes == 30081024
    q = f.tensor("blk.0.attn_q.weight")
    assert q.shape == (576, 576) and q.dtype == np.float32 and np.isfinite(q).all()
    assert {t.type.name for t in f.tensors.values()} == {"Q4_1", "Q8_0", "F32"}


@pytest.mark.slow
def test_real_file_tensors_equal_the_gguf_package() -> None:
    """All 272 tensors and all metadata (slow: the gguf package's reader takes ~10 s here)."""
    gguf = pytest.importorskip("gguf")
    path = _real_file()
    ours = read_gguf(path)
    theirs = gguf.GGUFReader(path)
    assert len(ours.tensors) == len(theirs.tensors) == 272
    types = set()
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        types.add(info.type.name)
        assert info.offset == int(t.data_offset) and info.nbytes == int(t.n_bytes)
        want = gguf.quants.dequantize(t.data, t.tensor_type)
        np.testing.assert_array_equal(ours.tensor(t.name), want.reshape(info.shape))
    assert types == {"Q4_1", "Q8_0", "F32"}
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        want = field.contents()
        got = ours.metadata[key]
        got = got.tolist() if isinstance(got, np.ndarray) else got
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, key
