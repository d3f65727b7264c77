"""Tokenizers on every code point: WordPiece ids against Hugging Face's pure-Python
BertTokenizer (the reference of tests/test_tokenizers.py) for each of U+0000-U+2FFFF, lone
surrogates included, and on mixed strings; byte-level BPE and the character tokenizer on
lone surrogates.

Both minitl and Hugging Face's Python tokenizer classify characters with the running
Python's `unicodedata`, so these comparisons hold whatever its Unicode version. The Rust
("fast") tokenizer uses its own, older tables and keeps unassigned code points as [UNK]
where the Python one drops them (every category C*); `test_the_rust_tokenizer_differs_only_
where_its_unicode_tables_do` pins that down.

All code points are compared in one call per side: the characters are joined with " | ",
and the ids split at the id of "|" (spaces and the punctuation split keep every character's
tokens apart, exactly as when it is encoded alone; checked per character on a subset here
and on all of them in the slow test)."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from minitl.data.tokenizers import ByteBPETokenizer, CharTokenizer, WordPieceTokenizer

ALL = range(0x30000)
SEP = "|"
REPORTED = [0x061D, 0x2E55, 0x20000, 0x2A6DE, 0x2A6DF, 0x0378, 0xFDD0, 0xE000, 0x0898, 0x1734,
            0xD800, 0xDFFF, 0x2FFFF, 0x00AD, 0x200B, 0x3000, 0x0085, 0x1F600]


def _asset_dir() -> Path:
    from minitl import assets

    try:
        return Path(assets.path("minilm-l6"))
    except (OSError, RuntimeError) as e:  # no cache and no way to fetch it
        pytest.skip(f"minilm-l6 asset unavailable: {e}")


def _python_bert(directory: Path) -> Any:
    """Hugging Face's pure-Python BertTokenizer: `BertTokenizerLegacy` in transformers 5,
    `BertTokenizer` before (where `BertTokenizerFast` is the Rust one)."""
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "BertTokenizerLegacy", None)
    if cls is None and not transformers.__version__.startswith(("0", "1", "2", "3", "4.")):
        pytest.skip("no pure-Python BertTokenizer in this transformers")
    tok = (cls or transformers.BertTokenizer).from_pretrained(directory)
    assert not hasattr(tok, "backend_tokenizer"), type(tok)  # not the Rust one
    return tok


@pytest.fixture(scope="module")
def tokenizers() -> tuple[WordPieceTokenizer, Any]:
    directory = _asset_dir()
    return WordPieceTokenizer.from_pretrained(directory), _python_bert(directory)


def _per_char(ids: list[int], sep_id: int, n: int) -> list[list[int]]:
    parts: list[list[int]] = [[]]
    for i in ids:
        if i == sep_id:
            parts.append([])
        else:
            parts[-1].append(i)
    assert len(parts) == n
    return parts


@pytest.fixture(scope="module")
def hf_per_char(tokenizers: tuple[WordPieceTokenizer, Any]) -> dict[int, list[int]]:
    """Hugging Face's ids of each code point alone (without [CLS]/[SEP])."""
    _, hf = tokenizers
    cps = [c for c in ALL if chr(c) != SEP]
    ids = hf.convert_tokens_to_ids(hf.tokenize(f" {SEP} ".join(map(chr, cps))))
    out = dict(zip(cps, _per_char(ids, hf.convert_tokens_to_ids(SEP), len(cps))))
    out[ord(SEP)] = hf.encode(SEP, add_special_tokens=False)
    return out


def _mine(tok: WordPieceTokenizer, text: str) -> list[int]:
    return tok.convert_tokens_to_ids(tok.tokenize(text))


def test_every_code_point_joined(tokenizers: tuple[WordPieceTokenizer, Any],
                                 hf_per_char: dict[int, list[int]]) -> None:
    mine, _ = tokenizers
    cps = [c for c in ALL if chr(c) != SEP]
    got = _per_char(_mine(mine, f" {SEP} ".join(map(chr, cps))),
                    mine.convert_tokens_to_ids(SEP), len(cps))
    wrong = [hex(c) for c, g in zip(cps, got) if g != hf_per_char[c]]
    assert not wrong, f"{len(wrong)} code points differ, first {wrong[:10]}"


def test_code_points_alone_subset(tokenizers: tuple[WordPieceTokenizer, Any],
                                  hf_per_char: dict[int, list[int]]) -> None:
    mine, hf = tokenizers
    cps = sorted(set(range(0, 0x30000, 37)) | set(REPORTED) | {ord(SEP)})
    texts = [chr(c) for c in cps]
    got = mine(texts)["input_ids"]
    cls_, sep = mine.cls_token_id, mine.sep_token_id
    wrong = [hex(c) for c, g in zip(cps, got) if g != [cls_, *hf_per_char[c], sep]]
    assert not wrong, f"{len(wrong)} of {len(cps)} differ, first {wrong[:10]}"
    for c in REPORTED:  # and against Hugging Face's own single-string encode
        assert mine.encode(chr(c)) == hf.encode(chr(c)), hex(c)


@pytest.mark.slow
def test_every_code_point_alone(tokenizers: tuple[WordPieceTokenizer, Any],
                                hf_per_char: dict[int, list[int]]) -> None:
    mine, _ = tokenizers
    got = mine([chr(c) for c in ALL], add_special_tokens=False)["input_ids"]
    wrong = [hex(c) for c, g in zip(ALL, got) if g != hf_per_char[c]]
    assert not wrong, f"{len(wrong)} code points differ, first {wrong[:10]}"


MIXED = [
    "a\u061db", "x\u2e55y[MASK]z", "中\U00020000文\U0002a6df", "ab\u0378cd", "\ufdd0x\ue000y",
    "e\u0301te\u0301 ÉTÉ", "a\u0898b\u1734c", "soft\u00adhyphen zero\u200bwidth", "\ud800a\udfff",
    "tab\tnew\nline\u2028sep\u0085nel\u3000", "[MASK]x [CLS]a\x00b", "İstanbul ß ﬁ Ǆ",
    "\U0001f600\U0001f44d\U0001f3fd", "a" * 120 + "\u0301", "１２３ＡＢＣ Ⅻⅷ ²³½",
]


def test_mixed_strings(tokenizers: tuple[WordPieceTokenizer, Any]) -> None:
    mine, hf = tokenizers
    rng = random.Random(0)
    # Σ and a control character inside "[MASK]" are left out: transformers 5's Python
    # tokenizer changed both (see wordpiece.py); minitl keeps transformers 4's behaviour,
    # which tests/data/wordpiece_reference.json holds
    pool = [chr(c) for c in ALL if c != 0x3A3]
    common = [*"aZ09 .,;'-_\t\n\x00\x07\u00a0éÉ\u0301ßİıσς中ア", "[MASK]", "##", "[", "]"]
    texts = MIXED + ["".join(rng.choice(common) if rng.random() < 0.6 else rng.choice(pool)
                             for _ in range(rng.randint(1, 10))) for _ in range(1500)]
    wrong = [t for t in texts if mine.encode(t) != hf.encode(t)]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, first {wrong[:3]!r}"


def test_the_rust_tokenizer_differs_only_where_its_unicode_tables_do(
        tokenizers: tuple[WordPieceTokenizer, Any]) -> None:
    """Not a target, a record: where minitl (= HF's Python tokenizer) and the Rust tokenizer
    part, the code point is unassigned in Python's tables (Python drops all of C*, Rust keeps
    Cn as [UNK]) or a mark / format character, whose tables differ by Unicode version."""
    transformers = pytest.importorskip("transformers")
    mine, _ = tokenizers
    fast_cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    fast = fast_cls.from_pretrained(_asset_dir())
    if not hasattr(fast, "backend_tokenizer"):
        pytest.skip("no Rust BertTokenizer")
    cps = [c for c in range(0, 0x30000, 7) if not 0xD800 <= c <= 0xDFFF]  # Rust takes no Cs
    texts = [chr(c) for c in cps]
    theirs = fast(texts)["input_ids"]
    ours = mine(texts)["input_ids"]
    cats = {unicodedata.category(chr(c)) for c, a, b in zip(cps, ours, theirs) if a != b}
    assert cats <= {"Cn", "Mn", "Mc", "Cf"}, cats


# ---- byte-level BPE and characters: lone surrogates -------------------------------------------


@pytest.fixture(scope="module")
def bpe() -> ByteBPETokenizer:
    return ByteBPETokenizer.train(["hello world, héllo wörld 中文 😀"] * 3, 300)


@pytest.mark.parametrize("text, index", [("a\ud800b", 1), ("ok \udcff", 3), ("\udfff", 0),
                                         ("x\ud83d\ude00", 1)])
def test_bpe_refuses_lone_surrogates_as_transformers_does(bpe: ByteBPETokenizer, text: str,
                                                          index: int) -> None:
    with pytest.raises(UnicodeEncodeError, match=f"lone surrogate U\\+{ord(text[index]):04X} "
                                                 f"at index {index}") as info:
        bpe.encode(text)
    assert info.value.start == index
    with pytest.raises(UnicodeEncodeError, match="training text"):
        ByteBPETokenizer.train(["fine", text], 300)
    with pytest.raises(UnicodeEncodeError, match="special token"):
        ByteBPETokenizer.train(["fine"], 300, special_tokens=[text])


def test_transformers_refuses_lone_surrogates_too() -> None:
    tk = pytest.importorskip("tokenizers")
    ref = tk.ByteLevelBPETokenizer()
    ref.train_from_iterator(["hello world"], vocab_size=260, show_progress=False)
    with pytest.raises((TypeError, UnicodeEncodeError)):
        ref.encode("a\ud800b")


def test_bpe_round_trips_every_other_code_point(bpe: ByteBPETokenizer) -> None:
    text = " ".join(chr(c) for c in range(0, 0x30000, 3) if not 0xD800 <= c <= 0xDFFF)
    assert bpe.decode(bpe.encode(text)) == text


def test_char_tokenizer_saves_and_loads_lone_surrogates(tmp_path: Path) -> None:
    tok = CharTokenizer.train(["ab\ud800c\udcff"])
    tok.save(tmp_path / "c.json")
    back = CharTokenizer.load(tmp_path / "c.json")
    assert back.itos == tok.itos
    assert back.encode("a\udcff\ud800") == tok.encode("a\udcff\ud800")
    (tmp_path / "c.json").read_text(encoding="utf-8")  # valid UTF-8 on disk
