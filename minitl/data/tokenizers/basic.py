"""BERT's text normalisation and greedy WordPiece segmentation (the two stages of
the original BERT ``tokenization.py``, Devlin et al., arXiv:1810.04805).

1. :class:`BasicTokenizer` cleans the text (drops NUL, U+FFFD and control characters, maps
   whitespace to a space), puts spaces around CJK ideographs, NFC-normalises, splits on
   whitespace, lower-cases and strips accents (NFD, then drop category Mn), and splits
   every punctuation character (ASCII symbols and Unicode category P*) into its own token.
2. :func:`greedy_longest_match` cuts each word greedily into the longest vocabulary entries, left
   to right, continuation pieces spelled ``##piece``; a word with an unmatchable rest, or
   longer than ``max_input_chars_per_word``, becomes ``[UNK]``.

Every rule follows Hugging Face's Python ``BertTokenizer`` so that ids agree exactly.

Character classes (control, whitespace, punctuation, accents) come from the running Python's
``unicodedata``, as in Hugging Face's Python tokenizer, so the two agree on every code point
whatever the Unicode version (tests/test_hostile_tokenizers.py checks all of U+0000-U+2FFFF).
The Rust ("fast") tokenizer does not: its tables are its own and older, and its "control"
leaves out unassigned code points (category Cn), which it keeps as ``[UNK]`` where the
Python rule (any category ``C*``) drops them. With tokenizers 0.23 and Python 3.11 (Unicode
14.0) the two Hugging Face tokenizers part on 49,072 single code points of U+0000-U+2FFFF:
48,674 unassigned, the rest marks and format characters its tables lack. Under an older
Python, characters added since (U+061D, U+2E55, the end of CJK Extension B) are unassigned,
so both Python tokenizers drop them while the Rust one may not.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping

__all__ = ["BERT_WHITESPACE", "BasicTokenizer", "greedy_longest_match", "load_vocab"]

# The characters _is_whitespace accepts: space, \t, \n, \r and category Zs (spelled out;
# a test checks the list against unicodedata).
ZS_CHARS = "\u0020\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
BERT_WHITESPACE = re.compile(f"[\t\n\r{ZS_CHARS}]+")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    # \t \n \r are category Cc but count as whitespace.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # All non-alphanumeric ASCII counts, including symbols like ^ $ ` that Unicode files
    # under S*, not P*.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    """CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana, which use spaces)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_on_punctuation(token: str) -> list[str]:
    out: list[str] = []
    start_new = True
    for ch in token:
        if _is_punctuation(ch):
            out.append(ch)
            start_new = True
        else:
            if start_new:
                out.append("")
            start_new = False
            out[-1] += ch
    return out


class BasicTokenizer:
    """Stage 1: cleaning, CJK spacing, lower-casing/accent stripping, punctuation split.

    ``strip_accents=None`` follows ``do_lower_case`` (as in the original BERT). Words in
    ``never_split`` are kept whole and untouched.
    """

    def __init__(self, do_lower_case: bool = True, never_split: Iterable[str] = (),
                 tokenize_chinese_chars: bool = True, strip_accents: bool | None = None) -> None:
        self.do_lower_case = do_lower_case
        self.never_split = set(never_split)
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents

    def clean(self, text: str) -> str:
        out = []
        for ch in text:
            if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
                continue
            out.append(" " if _is_whitespace(ch) else ch)
        return "".join(out)

    def tokenize(self, text: str, never_split: Iterable[str] = ()) -> list[str]:
        keep = self.never_split.union(never_split)
        text = self.clean(text)
        if self.tokenize_chinese_chars:
            text = "".join(f" {c} " if _is_cjk(ord(c)) else c for c in text)
        # One spelling per character: a precomposed "é" and "e" + U+0301 give the same tokens.
        text = unicodedata.normalize("NFC", text)
        pieces: list[str] = []
        for token in text.split():  # str.split(): also splits on U+2028 and friends, as BERT
            if token not in keep:
                if self.do_lower_case:
                    token = token.lower()
                    if self.strip_accents is not False:
                        token = _strip_accents(token)
                elif self.strip_accents:
                    token = _strip_accents(token)
            if token in keep:
                pieces.append(token)
            else:
                pieces.extend(_split_on_punctuation(token))
        # A word made only of accents is empty by now; joining and re-splitting drops it.
        return " ".join(pieces).split()


def greedy_longest_match(word: str, vocab: Mapping[str, int], unk_token: str = "[UNK]",
                         max_input_chars_per_word: int = 100) -> list[str]:
    """Stage 2: greedy longest-match-first segmentation of one word.

    ``"unaffable"`` -> ``["un", "##aff", "##able"]``. If some position has no vocabulary
    entry starting there, the whole word becomes ``[unk_token]``.
    """
    if len(word) > max_input_chars_per_word:
        return [unk_token]
    pieces: list[str] = []
    start, n = 0, len(word)
    while start < n:
        end = n
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        else:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces


def load_vocab(path: str | os.PathLike[str]) -> dict[str, int]:
    """``vocab.txt``: one token per line, the id is the line number (0-based)."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    return vocab
