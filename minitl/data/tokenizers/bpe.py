"""Byte-level byte-pair encoding, GPT-2 style, trained from scratch.

BPE (Sennrich et al., arXiv:1508.07909) starts from an alphabet and repeatedly merges the
most frequent adjacent pair of symbols into a new symbol. GPT-2 (Radford et al., 2019) runs
it on UTF-8 *bytes*: the base alphabet is the 256 byte values, so every string has an
encoding, nothing is ever unknown, and ``decode(encode(text)) == text`` for any text.

"Any text" means Unicode text: a Python str can also hold lone surrogates (U+D800-U+DFFF,
e.g. from ``errors="surrogateescape"``), which are not characters and have no UTF-8 bytes.
Hugging Face refuses them too (transformers' Python GPT2Tokenizer raises UnicodeEncodeError
from ``token.encode("utf-8")``, the Rust one TypeError), so ``encode`` and ``train`` raise
UnicodeEncodeError naming the code point and its index in the text, before any work.
Decoding is lenient as in transformers (``errors="replace"``): ids that cut a character
give U+FFFD.

Text is first cut into words by a regex (below) and merges never cross a word boundary,
so training only needs the word-frequency table. Training keeps the count of every
adjacent pair and, for each pair, the words that contain it; a merge rewrites only those
words and updates the counts of the pairs around each rewrite, and a max-heap with lazy
deletion finds the next best pair. That makes each merge cost proportional to the words
it touches, not to the corpus.

Token strings use GPT-2's byte -> printable-character table (a space is ``Ġ``), so a
saved vocabulary reads like GPT-2's ``vocab.json``/``merges.txt``. Ids: the special tokens
first, then the 256 bytes in byte order, then the merges in the order they were learned.
"""

from __future__ import annotations

import heapq
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise

from minitl.data.tokenizers._files import read_json, write_json

__all__ = ["GPT2_SPLIT_PATTERN", "ByteBPETokenizer", "bytes_to_unicode"]

_KIND = "ByteBPETokenizer"

# GPT-2's pre-tokenisation regex is
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# Stdlib ``re`` has no \p{..} classes, so: letters \p{L} -> [^\W\d_] (word characters that
# are not decimal digits or "_"), numbers \p{N} -> \d (decimal digits, category Nd), other
# -> [^\s\w] or "_". The one difference: characters of categories Nl/No (Roman numerals,
# superscripts, fractions) count as letters here, not numbers. Any split is still lossless,
# it only changes which merges can be learned.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
)

_CACHE_LIMIT = 100_000  # words remembered by encode(); the cache is dropped when full
_SURROGATE = re.compile("[\ud800-\udfff]")


def _require_unicode(text: str, what: str = "text") -> None:
    """UnicodeEncodeError at the first lone surrogate of ``text`` (see the module docstring)."""
    m = _SURROGATE.search(text)
    if m is not None:
        i = m.start()
        raise UnicodeEncodeError(
            "utf-8", text, i, i + 1,
            f"the {what} holds a lone surrogate U+{ord(text[i]):04X} at index {i}, which is not "
            "a Unicode character and has no bytes; byte-level BPE (like GPT-2's tokenizers "
            "in transformers) only encodes valid text")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from byte value to a printable character.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, ...)
    map to code points 256 and up, so no token string contains whitespace or controls.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_ENCODER = bytes_to_unicode()
_BYTE_DECODER = {c: b for b, c in _BYTE_ENCODER.items()}


def _token_string(data: bytes) -> str:
    return "".join(_BYTE_ENCODER[b] for b in data)


def _token_bytes(token: str) -> bytes:
    try:
        return bytes(_BYTE_DECODER[c] for c in token)
    except KeyError as e:
        raise ValueError(f"{token!r} is not a byte-level token string") from e


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every non-overlapping (a, b) in ``word``, left to right, by ``new``."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class ByteBPETokenizer:
    """Byte-level BPE tokenizer.

    Args:
        vocab: token string (GPT-2 byte alphabet) -> id, for every ordinary token; it must
            hold all 256 single-byte tokens unless ``unk_id`` is given.
        merges: learned merges as pairs of token strings, highest priority first.
        special_tokens: literal strings with their own ids (e.g. ``{"<|endoftext|>": 0}``);
            found in text by ``encode`` unless ``split_special_tokens=True``.
        pattern: the pre-tokenisation regex.
        skip_unknown_bytes: leave bytes without a single-byte token out of the ids instead of
            refusing such a vocabulary, as Hugging Face's BPE does when its model has no
            unknown token (pretrained vocabularies such as SmolLM2's lack bytes that never
            occurred in their corpus: 0xC0, 0xF5-0xFF and a few control characters).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
        skip_unknown_bytes: bool = False,
    ) -> None:
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        if "" in self.special_tokens:
            raise ValueError("a special token cannot be the empty string")
        self.encoder: dict[str, int] = dict(vocab)
        ids = list(self.encoder.values()) + list(self.special_tokens.values())
        if len(set(ids)) != len(ids):
            raise ValueError("token ids must be unique across the vocabulary and special tokens")
        missing = [b for b in range(256) if _BYTE_ENCODER[b] not in self.encoder]
        if missing and not skip_unknown_bytes:
            raise ValueError(f"vocabulary lacks {len(missing)} single-byte tokens")
        # id -> bytes for decode; special tokens decode to their own text.
        self._id_bytes: dict[int, bytes] = {i: _token_bytes(t) for t, i in self.encoder.items()}
        for tok, i in self.special_tokens.items():
            _require_unicode(tok, "special token")
            self._id_bytes[i] = tok.encode("utf-8")
        self._id_token = {i: t for t, i in self.encoder.items()}
        self._id_token.update((i, t) for t, i in self.special_tokens.items())
        self._byte_ids = [self.encoder.get(_BYTE_ENCODER[b], -1) for b in range(256)]
        self._all_bytes = not missing
        # (left id, right id) -> (rank, merged id); a lower rank merges first.
        self.merges: list[tuple[str, str]] = [(a, b) for a, b in merges]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            try:
                key, new = (self.encoder[a], self.encoder[b]), self.encoder[a + b]
            except KeyError as e:
                raise ValueError(f"merge {a!r} {b!r} uses a token not in the vocabulary") from e
            self._ranks.setdefault(key, (rank, new))
        self.pattern = pattern
        self._split = re.compile(pattern)
        self._special_split = (
            re.compile("(" + "|".join(re.escape(t) for t in
                                      sorted(self.special_tokens, key=len, reverse=True)) + ")")
            if self.special_tokens else None
        )
        self._cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> ByteBPETokenizer:
        """Learn merges until the vocabulary (specials + 256 bytes + merges) has
        ``vocab_size`` entries or no pair occurs ``min_frequency`` times.

        Special tokens found in the training text are cut out and never merged into.
        Ties between equally frequent pairs go to the pair with the smaller ids, so
        training is deterministic.
        """
        specials = list(dict.fromkeys(special_tokens))
        if "" in specials:
            raise ValueError("a special token cannot be the empty string")
        n_base = len(specials) + 256
        if vocab_size < n_base:
            raise ValueError(f"vocab_size {vocab_size} < {n_base} (special tokens + 256 bytes)")
        split = re.compile(pattern)
        special_split = (re.compile("|".join(re.escape(t) for t in
                                             sorted(specials, key=len, reverse=True)))
                         if specials else None)
        for t in specials:
            _require_unicode(t, "special token")
        word_counts: Counter[str] = Counter()
        for text in [texts] if isinstance(texts, str) else texts:
            _require_unicode(text, "training text")
            for part in special_split.split(text) if special_split else [text]:
                word_counts.update(split.findall(part))

        # Symbols during training are ids: byte b is id n_base - 256 + b.
        offset = len(specials)
        tok_bytes: list[bytes] = [bytes([b]) for b in range(256)]  # index = id - offset
        bytes_id: dict[bytes, int] = {t: i + offset for i, t in enumerate(tok_bytes)}
        words = [[offset + b for b in w.encode("utf-8")] for w in word_counts]
        freqs = list(word_counts.values())

        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for wi, (w, f) in enumerate(zip(words, freqs)):
            for p in pairwise(w):
                pair_counts[p] += f
                where[p].add(wi)
        # Max-heap by count via negation. Counts of existing pairs only ever fall, so a
        # stale entry overstates its pair: when popped it is re-pushed with the true count.
        heap = [(-c, p) for p, c in pair_counts.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int]] = []
        while offset + len(tok_bytes) < vocab_size and heap:
            neg, pair = heapq.heappop(heap)
            count = pair_counts.get(pair, 0)
            if count != -neg:
                if count > 0:
                    heapq.heappush(heap, (-count, pair))
                continue
            if count < min_frequency:
                break
            a, b = pair
            merged = tok_bytes[a - offset] + tok_bytes[b - offset]
            new = bytes_id.get(merged)
            if new is None:  # the same bytes can arise from two different pairs
                new = offset + len(tok_bytes)
                tok_bytes.append(merged)
                bytes_id[merged] = new
            merges.append(pair)
            grown: set[tuple[int, int]] = set()
            for wi in where.pop(pair):
                w = words[wi]
                nw = _merge_word(w, a, b, new)
                if len(nw) == len(w):  # stale index entry: the word lost the pair earlier
                    continue
                f = freqs[wi]
                for p in pairwise(w):
                    pair_counts[p] -= f
                for p in pairwise(nw):
                    pair_counts[p] += f
                    if new in p:
                        where[p].add(wi)
                        grown.add(p)
                words[wi] = nw
            pair_counts.pop(pair, None)
            for p in grown:
                heapq.heappush(heap, (-pair_counts[p], p))

        vocab = {_token_string(t): i + offset for i, t in enumerate(tok_bytes)}
        id_string = {i: s for s, i in vocab.items()}
        string_merges = [(id_string[a], id_string[b]) for a, b in merges]
        return cls(vocab, string_merges, {t: i for i, t in enumerate(specials)}, pattern)

    # ---------------------------------------------------------------- encoding

    @property
    def vocab_size(self) -> int:
        return len(self.encoder) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.special_tokens.get(token, self.encoder.get(token))

    def id_to_token(self, i: int) -> str:
        try:
            return self._id_token[int(i)]
        except KeyError:
            raise ValueError(f"id {i} is outside the vocabulary") from None

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        ids = [self._byte_ids[b] for b in word.encode("utf-8")]
        if not self._all_bytes:
            ids = [i for i in ids if i >= 0]
        ranks = self._ranks
        while len(ids) > 1:
            # The lowest-ranked adjacent pair merges next (GPT-2's bpe()).
            best = min(pairwise(ids), key=lambda p: ranks.get(p, (1 << 62, 0))[0])
            hit = ranks.get(best)
            if hit is None:
                break
            ids = _merge_word(ids, best[0], best[1], hit[1])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _words(self, text: str) -> list[str]:
        """Pre-tokenisation: the pieces merges never cross (subclasses may split further)."""
        return self._split.findall(text)

    def encode(self, text: str, split_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``. Special-token strings in the text get their own ids
        unless ``split_special_tokens`` (then they are encoded as ordinary text).

        Raises:
            UnicodeEncodeError: ``text`` holds a lone surrogate (not Unicode text).
        """
        _require_unicode(text)
        if self._special_split is None or split_special_tokens:
            parts = [text]
        else:
            parts = self._special_split.split(text)
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2 == 1:  # odd pieces of a capturing split are the separators
                ids.append(self.special_tokens[part])
                continue
            for word in self._words(part):
                ids.extend(self._encode_word(word))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Concatenate the tokens' bytes and decode them as UTF-8.

        Exact inverse of ``encode``. An arbitrary id sequence may cut a multi-byte
        character; such bytes decode to U+FFFD.
        """
        special = set(self.special_tokens.values()) if skip_special_tokens else set()
        chunks = []
        for i in ids:
            i = int(i)
            if i in special:
                continue
            try:
                chunks.append(self._id_bytes[i])
            except KeyError:
                raise ValueError(f"id {i} is outside the vocabulary") from None
        return b"".join(chunks).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write vocab, merges, special tokens and the split regex as JSON (atomically)."""
        write_json(path, _KIND, {
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "vocab": dict(sorted(self.encoder.items(), key=lambda kv: kv[1])),
            "merges": [f"{a} {b}" for a, b in self.merges],
        })

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ByteBPETokenizer:
        doc = read_json(path, _KIND)
        merges: list[tuple[str, str]] = []
        for m in doc["merges"]:
            a, sep, b = m.partition(" ")
            if not sep or not a or not b or " " in b:
                raise ValueError(f"{os.fspath(path)}: merge {m!r} is not two tokens")
            merges.append((a, b))
        return cls(doc["vocab"], merges, doc["special_tokens"], doc["pattern"])

    def __repr__(self) -> str:
        return (f"ByteBPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")
