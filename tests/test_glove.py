"""GloVe vectors without pyarrow: the snappy decoder, the Parquet column reader on files
written here byte by byte (plain, dictionary, data page v2, nulls, snappy), load_glove on a
synthetic directory, damaged files, and the real asset when it is already cached."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from minitl import assets
from minitl.io.parquet import ParquetError, read_column, snappy_decompress
from minitl.io.word_vectors import (
    GLOVE_ASSET,
    GLOVE_VECTORS,
    GLOVE_WORDS,
    WordVectorsError,
    load_glove,
    split_clitics,
)
from minitl.models.word2vec import Word2Vec, WordVectors

# ---- a tiny Parquet writer (Thrift compact protocol), enough for one string column -------

_I32, _I64, _BIN, _LIST, _STRUCT = 5, 6, 8, 9, 12


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _zz(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _struct(*fields: tuple[int, int, bytes]) -> bytes:
    out, last = bytearray(), 0
    for fid, ctype, payload in fields:
        out += bytes([(fid - last) << 4 | ctype]) + payload
        last = fid
    return bytes(out + b"\x00")


def _list(etype: int, items: list[bytes]) -> bytes:
    n = len(items)
    head = bytes([n << 4 | etype]) if n < 15 else bytes([0xF0 | etype]) + _varint(n)
    return head + b"".join(items)


def _bin(b: bytes) -> bytes:
    return _varint(len(b)) + b


def _plain_strings(words: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)


def _bitpacked(values: list[int], width: int) -> bytes:
    """RLE/bit-packed hybrid, one bit-packed run (padded to a multiple of 8 values)."""
    n = (len(values) + 7) // 8 * 8
    bits = np.zeros((n, width), np.uint8)
    for i, v in enumerate(values):
        bits[i] = [(v >> b) & 1 for b in range(width)]
    return _varint((n // 8) << 1 | 1) + np.packbits(bits.ravel(), bitorder="little").tobytes()


def _snappy_literal(raw: bytes) -> bytes:
    """A valid snappy block of literals only (60: a one-byte length follows)."""
    out = bytearray(_varint(len(raw)))
    for i in range(0, len(raw), 256):
        piece = raw[i:i + 256]
        out += bytes([60 << 2, len(piece) - 1]) + piece
    return bytes(out)


def write_parquet(path: Path, words: list[str | None], layout: str = "dict",
                  snappy: bool = False) -> None:
    """One OPTIONAL BYTE_ARRAY column "index"; layout: "dict" (dictionary page + RLE_DICTIONARY
    data page v1), "plain" (data page v1) or "v2" (data page v2, plain)."""
    present = [w for w in words if w is not None]
    defs = [0 if w is None else 1 for w in words]
    squeeze = _snappy_literal if snappy else (lambda b: b)

    def page(kind: int, raw: bytes, header_field: tuple[int, int, bytes],
             body: bytes | None = None) -> bytes:
        body = squeeze(raw) if body is None else body
        return _struct((1, _I32, _zz(kind)), (2, _I32, _zz(len(raw))),
                       (3, _I32, _zz(len(body))), header_field) + body

    pages = b""
    dict_offset = None
    if layout == "dict":
        dictionary = sorted(set(present))
        dict_offset = 4
        pages += page(2, _plain_strings(dictionary),
                      (7, _STRUCT, _struct((1, _I32, _zz(len(dictionary))), (2, _I32, _zz(0)))))
        levels = _bitpacked(defs, 1)
        ids = [dictionary.index(w) for w in present]
        width = max(1, (len(dictionary) - 1).bit_length())
        values = bytes([width]) + _bitpacked(ids, width)
        raw = struct.pack("<I", len(levels)) + levels + values
        data_header = _struct((1, _I32, _zz(len(words))), (2, _I32, _zz(8)),
                              (3, _I32, _zz(3)), (4, _I32, _zz(3)))
        data_offset = 4 + len(pages)
        pages += page(0, raw, (5, _STRUCT, data_header))
    elif layout == "plain":
        levels = _bitpacked(defs, 1)
        raw = struct.pack("<I", len(levels)) + levels + _plain_strings(present)
        data_header = _struct((1, _I32, _zz(len(words))), (2, _I32, _zz(0)),
                              (3, _I32, _zz(3)), (4, _I32, _zz(3)))
        data_offset = 4
        pages += page(0, raw, (5, _STRUCT, data_header))
    else:  # v2: levels stay uncompressed before the (compressed) values
        levels = _bitpacked(defs, 1)
        values = _plain_strings(present)
        v2 = _struct((1, _I32, _zz(len(words))), (2, _I32, _zz(len(words) - len(present))),
                     (3, _I32, _zz(len(words))), (4, _I32, _zz(0)),
                     (5, _I32, _zz(len(levels))), (6, _I32, _zz(0)))
        data_offset = 4
        pages += page(3, levels + values, (8, _STRUCT, v2), body=levels + squeeze(values))
    col_fields = [(1, _I32, _zz(6)), (2, _LIST, _list(_I32, [_zz(0), _zz(8)])),
                  (3, _LIST, _list(_BIN, [_bin(b"index")])), (4, _I32, _zz(int(snappy))),
                  (5, _I64, _zz(len(words))), (6, _I64, _zz(len(pages))),
                  (7, _I64, _zz(len(pages))), (9, _I64, _zz(data_offset))]
    if dict_offset is not None:
        col_fields.append((11, _I64, _zz(dict_offset)))
    chunk = _struct((2, _I64, _zz(4)), (3, _STRUCT, _struct(*col_fields)))
    group = _struct((1, _LIST, _list(_STRUCT, [chunk])), (2, _I64, _zz(len(pages))),
                    (3, _I64, _zz(len(words))))
    schema = [_struct((4, _BIN, _bin(b"schema")), (5, _I32, _zz(1))),
              _struct((1, _I32, _zz(6)), (3, _I32, _zz(1)), (4, _BIN, _bin(b"index")))]
    meta = _struct((1, _I32, _zz(1)), (2, _LIST, _list(_STRUCT, schema)),
                   (3, _I64, _zz(len(words))), (4, _LIST, _list(_STRUCT, [group])))
    path.write_bytes(b"PAR1" + pages + meta + struct.pack("<I", len(meta)) + b"PAR1")


WORDS = ["the", ",", "king", "queen", "do", "n't", "like", "it", "'s", "good", "bad", "prince",
         "woman", "man", "über", "film", "movie", "ca", "o'brien"]


# ---- snappy ---------------------------------------------------------------------------------

def test_snappy_literals_and_copies() -> None:
    # "abc" literal, then a 1-byte-offset copy of 9 bytes that overlaps itself (offset 3),
    # then a 2-byte-offset copy of 3 bytes from the start.
    block = (_varint(15) + bytes([2 << 2]) + b"abc" + bytes([(9 - 4) << 2 | 1, 3])
             + bytes([(3 - 1) << 2 | 2]) + struct.pack("<H", 12))
    assert snappy_decompress(block) == b"abc" * 5
    assert snappy_decompress(_snappy_literal(bytes(range(256)) * 3)) == bytes(range(256)) * 3


@pytest.mark.parametrize("block", [
    _varint(5) + bytes([2 << 2]) + b"abc" + bytes([1 << 2 | 1, 9]),  # copy before the start
    _varint(9) + bytes([2 << 2]) + b"abc",  # promises more than it holds
    _varint(3) + bytes([9 << 2]) + b"abc",  # literal runs past the end
])
def test_snappy_damage_raises(block: bytes) -> None:
    with pytest.raises(ParquetError, match="snappy"):
        snappy_decompress(block)


# ---- Parquet --------------------------------------------------------------------------------

@pytest.mark.parametrize("snappy", [False, True])
@pytest.mark.parametrize("layout", ["dict", "plain", "v2"])
def test_read_column_layouts(tmp_path: Path, layout: str, snappy: bool) -> None:
    words: list[str | None] = [*WORDS, None, "the"]
    write_parquet(tmp_path / "w.parquet", words, layout, snappy)
    assert read_column(tmp_path / "w.parquet", "index") == words


def test_read_column_errors(tmp_path: Path) -> None:
    f = tmp_path / "w.parquet"
    write_parquet(f, WORDS, "dict", snappy=True)
    with pytest.raises(ParquetError, match="no column 'words'.*index"):
        read_column(f, "words")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParquetError, match=r"w\.parquet: not a Parquet file"):
        read_column(f, "index")
    # the first page's body overwritten: the failure names the file, whatever breaks first
    f.write_bytes(data[:30] + b"\xff" * 40 + data[70:])
    with pytest.raises(ParquetError, match=r"w\.parquet"):
        read_column(f, "index")


# ---- load_glove -----------------------------------------------------------------------------

def _glove_dir(tmp_path: Path, words: list[str], vectors: np.ndarray) -> Path:
    write_parquet(tmp_path / GLOVE_WORDS, list(words), "dict", snappy=True)
    np.save(tmp_path / GLOVE_VECTORS, vectors)
    return tmp_path


def _vectors(n: int, d: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


def test_load_glove_synthetic(tmp_path: Path) -> None:
    vecs = _vectors(len(WORDS))
    vecs[WORDS.index("queen")] = vecs[WORDS.index("king")] + 0.01  # nearest by construction
    glove = load_glove(_glove_dir(tmp_path, WORDS, vecs))
    assert isinstance(glove, WordVectors) and (len(glove.vocab), glove.dim) == (len(WORDS), 8)
    assert glove.vocab.words == WORDS and glove.vectors.dtype == np.float32
    assert glove.most_similar("king", 1)[0][0] == "queen"
    np.testing.assert_array_equal(glove.vector("film"), vecs[WORDS.index("film")])
    # contractions unknown as a whole split as GloVe's tokenizer did; o'brien is known whole
    ids = glove.vocab.encode("I don't like it, it's good. O'Brien can't")
    assert [glove.vocab.words[i] for i in ids] == ["do", "n't", "like", "it", "it", "'s",
                                                   "good", "o'brien", "ca", "n't"]
    x, known = glove.sentence_vectors(["the film", "zzz", "Über bad"])
    np.testing.assert_allclose(x[0], vecs[[0, WORDS.index("film")]].mean(axis=0), rtol=1e-6)
    assert known.tolist() == [2, 0, 2] and not x[1].any()
    small = load_glove(tmp_path, max_words=3)
    assert small.vocab.words == WORDS[:3] and small.vectors.shape == (3, 8)


def test_split_clitics() -> None:
    assert split_clitics("don't") == ["do", "n't"]
    assert split_clitics("we'll") == ["we", "'ll"]
    assert split_clitics("film") == ["film"]
    assert split_clitics("'tis") == ["'tis"]


def test_word2vec_is_word_vectors() -> None:
    from minitl.models.word2vec import Vocabulary

    vocab = Vocabulary(["a", "b"], np.array([2, 1]))
    model = Word2Vec.init(vocab, dim=4)
    assert isinstance(model, WordVectors) and model.w_in is model.vectors
    model.w_in = np.ones((2, 4), np.float32)
    assert model.similarity("a", "b") == pytest.approx(1.0)


def test_load_glove_damaged(tmp_path: Path) -> None:
    d = _glove_dir(tmp_path, WORDS, _vectors(len(WORDS)))
    np.save(d / GLOVE_VECTORS, _vectors(len(WORDS) - 1))
    with pytest.raises(WordVectorsError, match=f"has {len(WORDS) - 1} rows but .* lists "
                                               f"{len(WORDS)} words"):
        load_glove(d)
    bad = _vectors(len(WORDS))
    bad[5, 2] = np.nan
    np.save(d / GLOVE_VECTORS, bad)
    with pytest.raises(WordVectorsError, match=r"row 5 \(\"n't\"\) is not finite"):
        load_glove(d)
    (d / GLOVE_VECTORS).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(WordVectorsError, match="not a readable .npy"):
        load_glove(d)
    np.save(d / GLOVE_VECTORS, _vectors(len(WORDS)))
    raw = (d / GLOVE_WORDS).read_bytes()
    (d / GLOVE_WORDS).write_bytes(raw[:-20])
    with pytest.raises(WordVectorsError, match="GloVe vocabulary unreadable.*not a Parquet"):
        load_glove(d)
    write_parquet(d / GLOVE_WORDS, [*WORDS[:-1], "the"])
    with pytest.raises(WordVectorsError, match="distinct"):
        load_glove(d)
    (d / GLOVE_WORDS).unlink()
    with pytest.raises(WordVectorsError, match="missing"):
        load_glove(d)


# ---- the real vectors, only when already in the cache (no network in tests) --------------

@pytest.mark.skipif(not assets.is_cached(GLOVE_ASSET),
                    reason="glove-6b-50d not cached (minitl.assets.path('glove-6b-50d'))")
def test_real_glove_neighbours() -> None:
    glove = load_glove()
    assert (len(glove.vocab), glove.dim) == (400_000, 50)
    assert glove.vocab.words[:4] == ["the", ",", ".", "of"]
    np.testing.assert_allclose(glove.vector("the")[:3], [0.418, 0.24968, -0.41242])
    assert "queen" in [w for w, _ in glove.most_similar("king", 5)]
    assert glove.similarity("film", "movie") > 0.9
    assert glove.similarity("film", "banana") < 0.3
