"""BERT's WordPiece tokenizer: text -> model inputs, ids equal to Hugging Face's.

:class:`WordPieceTokenizer` cuts special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``,
``[MASK]``, ``[UNK]``) out of the text wherever they occur, runs the other pieces through
the BasicTokenizer and greedy WordPiece of :mod:`.basic`, maps tokens to ids, and builds
``[CLS] a [SEP] b [SEP]`` with token types, truncation, padding and attention masks the way
Hugging Face's ``BertTokenizer`` does. It loads a ``vocab.txt`` directly or a model
directory / minitl asset by name.

The reference is the pure-Python ``BertTokenizer`` of transformers 4.x, which agrees with
the Rust ("fast") tokenizer on every text of the reference file, but not on unassigned and
some recent code points (see :mod:`.basic`): minitl follows the Python one there too.
transformers 5 renamed it ``BertTokenizerLegacy`` and dropped its character-wise
lower-casing, which changes two corner cases (a word-final capital sigma, and "[MASK]" split
by a control character); we keep the 4.x behaviour. Pair truncation follows the Python
tokenizer; the fast one breaks ties the other way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minitl.data.tokenizers._files import atomic_write_text
from minitl.data.tokenizers.basic import (
    BERT_WHITESPACE,
    BasicTokenizer,
    greedy_longest_match,
    load_vocab,
)

__all__ = ["WordPieceTokenizer"]


# The cleanup Hugging Face applies after joining decoded tokens with spaces.
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))

Encoding = dict[str, Any]  # input_ids / token_type_ids / attention_mask: lists or arrays


class WordPieceTokenizer:
    """BERT tokenizer: text -> ``[CLS] a [SEP] b [SEP]`` ids equal to Hugging Face's.

    Args:
        vocab: token -> id (``load_vocab`` reads a ``vocab.txt``).
        do_lower_case: lower-case before WordPiece (uncased models).
        strip_accents: ``None`` strips exactly when lower-casing.
        tokenize_chinese_chars: surround CJK ideographs with spaces.
        never_split: extra words that the basic tokenizer keeps whole, as tokens.
        max_input_chars_per_word: longer words become ``[UNK]``.
        model_max_length: the length ``truncation`` cuts to when no ``max_length`` is
            given (``None``: no limit).
        clean_up_tokenization_spaces: ``decode`` removes the space before ``. , ? !`` and
            inside contractions, as Hugging Face does.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split: Iterable[str] = (),
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        max_input_chars_per_word: int = 100,
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = True,
    ) -> None:
        self.vocab: dict[str, int] = dict(vocab)
        self.ids_to_tokens: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        self.all_special_tokens = [unk_token, sep_token, pad_token, cls_token, mask_token]
        missing = [t for t in self.all_special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocabulary")
        self.basic = BasicTokenizer(do_lower_case, never_split, tokenize_chinese_chars,
                                    strip_accents)
        self.max_input_chars_per_word = max_input_chars_per_word
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        # Special tokens are found anywhere in the text ("a[MASK]b" too), longest first.
        alternatives = sorted(set(self.all_special_tokens), key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._chunk_cache: dict[str, list[str]] = {}

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_vocab(cls, path: str | os.PathLike[str], **kwargs: Any) -> WordPieceTokenizer:
        """Build from a ``vocab.txt``; keyword arguments as for the constructor."""
        return cls(load_vocab(path), **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str],
                        **kwargs: Any) -> WordPieceTokenizer:
        """Load from a directory in Hugging Face layout (``vocab.txt``, optionally
        ``tokenizer_config.json``) or from a minitl asset name such as ``"minilm-l6"``.

        Settings in ``tokenizer_config.json`` (lower-casing, accents, special tokens,
        ``model_max_length``) are used unless overridden by ``kwargs``.
        """
        path = Path(name_or_dir)
        if path.is_file():
            return cls.from_vocab(path, **kwargs)
        if not path.is_dir():
            from minitl import assets  # lazy: assets may fetch through pip

            path = Path(assets.path(str(name_or_dir)))
        if not (path / "vocab.txt").is_file():
            raise FileNotFoundError(f"no vocab.txt in {path}")
        settings = _read_tokenizer_config(path / "tokenizer_config.json")
        settings.update(kwargs)
        return cls.from_vocab(path / "vocab.txt", **settings)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``vocab.txt`` and ``tokenizer_config.json`` (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ordered = sorted(self.ids_to_tokens.items())
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise ValueError("vocab.txt needs ids 0..n-1 without gaps")
        atomic_write_text(directory / "vocab.txt", "".join(t + "\n" for _, t in ordered))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.basic.do_lower_case,
            "strip_accents": self.basic.strip_accents,
            "tokenize_chinese_chars": self.basic.tokenize_chinese_chars,
            "unk_token": self.unk_token, "sep_token": self.sep_token,
            "pad_token": self.pad_token, "cls_token": self.cls_token,
            "mask_token": self.mask_token,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")

    # ---------------------------------------------------------------- vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def unk_token_id(self) -> int:
        return self.vocab[self.unk_token]

    @property
    def sep_token_id(self) -> int:
        return self.vocab[self.sep_token]

    @property
    def pad_token_id(self) -> int:
        return self.vocab[self.pad_token]

    @property
    def cls_token_id(self) -> int:
        return self.vocab[self.cls_token]

    @property
    def mask_token_id(self) -> int:
        return self.vocab[self.mask_token]

    @property
    def all_special_ids(self) -> list[int]:
        return [self.vocab[t] for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> Any:
        """Token(s) -> id(s); tokens not in the vocabulary give ``unk_token_id``."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self.vocab.get(tokens, unk)
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        """Id(s) -> token(s); unknown ids give ``unk_token``."""
        if isinstance(ids, int) or (hasattr(ids, "ndim") and ids.ndim == 0):
            return self.ids_to_tokens.get(int(ids), self.unk_token)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.ids_to_tokens.get(i, self.unk_token) for i in _as_id_list(ids)
                if i not in skip]

    # ---------------------------------------------------------------- text -> tokens

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text``, without ``[CLS]``/``[SEP]``."""
        tokens: list[str] = []
        parts = self._special_split.split(text)
        for k, part in enumerate(parts):
            if k % 2 == 1:  # odd pieces of a capturing split are the special tokens
                tokens.append(part)
                continue
            # Whitespace separates words in every later step, so each whitespace-free
            # chunk can be tokenized on its own, and cached: words repeat a lot in text.
            for chunk in BERT_WHITESPACE.split(part):
                if chunk:
                    tokens.extend(self._tokenize_chunk(chunk))
        return tokens

    def _tokenize_chunk(self, chunk: str) -> list[str]:
        tokens = self._chunk_cache.get(chunk)
        if tokens is not None:
            return tokens
        tokens = []
        text = _lower_each_char(chunk) if self.basic.do_lower_case else chunk
        for word in self.basic.tokenize(text, never_split=self.all_special_tokens):
            if word in self.basic.never_split:
                tokens.append(word)
            else:
                tokens.extend(greedy_longest_match(word, self.vocab, self.unk_token,
                                                   self.max_input_chars_per_word))
        if len(self._chunk_cache) >= 100_000:
            self._chunk_cache.clear()
        self._chunk_cache[chunk] = tokens
        return tokens

    # ---------------------------------------------------------------- tokens -> model inputs

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None,
               truncation: bool | str = True, add_special_tokens: bool = True) -> list[int]:
        """``[CLS] text [SEP]`` or ``[CLS] text [SEP] text_pair [SEP]`` as ids.

        With ``truncation`` and a ``max_length`` (or ``model_max_length``), tokens are
        removed from the end: ``True``/``"longest_first"`` takes them one at a time from
        the longer sequence (from the pair on ties), as Hugging Face does;
        ``"only_first"``/``"only_second"`` from one side only.
        """
        return self.encode_plus(text, text_pair, max_length=max_length, truncation=truncation,
                                add_special_tokens=add_special_tokens)["input_ids"]

    def encode_plus(self, text: str, text_pair: str | None = None, *,
                    max_length: int | None = None, truncation: bool | str = True,
                    add_special_tokens: bool = True, padding: bool | str = False,
                    return_tensors: str | None = None) -> Encoding:
        """One example as ``{"input_ids", "token_type_ids", "attention_mask"}``."""
        if not isinstance(text, str) or not (text_pair is None or isinstance(text_pair, str)):
            raise TypeError("encode/encode_plus take strings; call the tokenizer for a batch")
        return self(text, text_pair, max_length=max_length, truncation=truncation,
                    add_special_tokens=add_special_tokens, padding=padding,
                    return_tensors=return_tensors)

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None,
                 *, max_length: int | None = None, truncation: bool | str = True,
                 add_special_tokens: bool = True, padding: bool | str = False,
                 return_tensors: str | None = None) -> Encoding:
        """Encode one example (``text`` a string) or a batch (a list of strings).

        ``padding``: ``False``; ``True``/``"longest"`` pads a batch to its longest row;
        ``"max_length"`` pads to ``max_length``. Padding goes on the right with
        ``pad_token_id``, token type 0 and attention mask 0. ``return_tensors="np"`` gives
        int64 arrays of shape (B, T) (B = 1 for a single example).
        """
        batched = not isinstance(text, str)
        texts: list[str] = [text] if isinstance(text, str) else list(text)
        pairs: list[str | None] = [None] * len(texts)
        if text_pair is not None:
            if isinstance(text_pair, str) == batched:
                raise ValueError("text_pair must match text: both strings or both lists")
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} text pairs")
        limit = max_length if max_length is not None else self.model_max_length
        rows = [self._build(self.convert_tokens_to_ids(self.tokenize(a)),
                            None if b is None else self.convert_tokens_to_ids(self.tokenize(b)),
                            add_special_tokens, limit if truncation else None, truncation)
                for a, b in zip(texts, pairs)]
        out: Encoding = {"input_ids": [r[0] for r in rows],
                         "token_type_ids": [r[1] for r in rows],
                         "attention_mask": [[1] * len(r[0]) for r in rows]}
        target = self._padding_length(padding, limit, [len(r[0]) for r in rows])
        if target is not None:
            for key, fill in (("input_ids", self.pad_token_id), ("token_type_ids", 0),
                              ("attention_mask", 0)):
                out[key] = [row + [fill] * (target - len(row)) for row in out[key]]
        if return_tensors is not None:
            if return_tensors != "np":
                raise ValueError(f"return_tensors must be None or 'np', got {return_tensors!r}")
            if len({len(r) for r in out["input_ids"]}) > 1:
                raise ValueError("rows differ in length; pass padding=True to stack them")
            width = len(out["input_ids"][0]) if out["input_ids"] else 0
            return {k: np.asarray(v, dtype=np.int64).reshape(len(v), width)
                    for k, v in out.items()}
        if not batched:
            out = {k: v[0] for k, v in out.items()}
        return out

    @staticmethod
    def _padding_length(padding: bool | str, limit: int | None, lengths: list[int]) -> int | None:
        if padding is False or padding == "do_not_pad":
            return None
        if padding is True or padding == "longest":
            return max(lengths, default=0)
        if padding == "max_length":
            if limit is None:
                raise ValueError("padding='max_length' needs max_length (or model_max_length)")
            return max(limit, *lengths) if lengths else limit
        raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")

    def _build(self, a: list[int], b: list[int] | None, add_special_tokens: bool,
               max_length: int | None, truncation: bool | str) -> tuple[list[int], list[int]]:
        """Truncate, then add ``[CLS]``/``[SEP]``; returns (input_ids, token_type_ids)."""
        n_special = (2 if b is None else 3) if add_special_tokens else 0
        if max_length is not None:
            excess = len(a) + len(b or ()) + n_special - max_length
            if excess > 0:
                if max_length < n_special:
                    raise ValueError(f"max_length={max_length} cannot hold the {n_special} "
                                     "special tokens")
                a, b = _truncate(a, b, excess, "longest_first" if truncation is True
                                 else str(truncation))
        if not add_special_tokens:
            # Hugging Face gives token type 0 to both sequences when no specials are added.
            return a + (b or []), [0] * (len(a) + len(b or ()))
        ids = [self.cls_token_id] + a + [self.sep_token_id]
        types = [0] * len(ids)
        if b is not None:
            ids += b + [self.sep_token_id]
            types += [1] * (len(b) + 1)
        return ids, types

    # ---------------------------------------------------------------- ids -> text

    def decode(self, ids: Any, skip_special_tokens: bool = True,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """Join tokens with spaces and glue ``##`` pieces onto the previous token.

        Lower-casing, accent stripping and ``[UNK]`` make this lossy: the result is the
        normalised text, not the original.
        """
        tokens = self.convert_ids_to_tokens(_as_id_list(ids), skip_special_tokens)
        text = " ".join(tokens).replace(" ##", "").strip()
        cleanup = (self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None
                   else clean_up_tokenization_spaces)
        if cleanup:
            for old, new in _CLEANUP:
                text = text.replace(old, new)
        return text

    def batch_decode(self, sequences: Iterable[Any], **kwargs: Any) -> list[str]:
        return [self.decode(s, **kwargs) for s in sequences]

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, "
                f"do_lower_case={self.basic.do_lower_case})")


def _truncate(a: list[int], b: list[int] | None, excess: int,
              strategy: str) -> tuple[list[int], list[int] | None]:
    """Drop ``excess`` ids from the ends of ``a``/``b`` (Hugging Face's strategies)."""
    if strategy == "longest_first" and b is not None:
        # One id at a time from the longer side, from b on ties; in closed form.
        la, lb = len(a), len(b)
        first = min(abs(la - lb), excess)
        half = (excess - first) // 2
        rest = excess - first - half
        take_a, take_b = (first + half, rest) if la > lb else (half, first + rest)
        return a[:max(la - take_a, 0)], b[:max(lb - take_b, 0)]
    if strategy in ("longest_first", "only_first"):
        if excess > len(a):
            raise ValueError(f"cannot remove {excess} tokens from a {len(a)}-token first sequence")
        return a[:len(a) - excess], b
    if strategy == "only_second":
        if b is None or excess > len(b):
            raise ValueError(f"cannot remove {excess} tokens from the second sequence")
        return a, b[:len(b) - excess]
    raise ValueError(f"unknown truncation strategy {strategy!r}")


def _lower_each_char(text: str) -> str:
    """Lower-case one character at a time, as Hugging Face does before tokenizing.

    This differs from ``str.lower`` only for a capital sigma at the end of a word, which
    becomes "σ", not the final form "ς" (Hugging Face's fast tokenizer does the same). It
    also means that a special token hidden by a control character ("[MA\\x00SK]") is
    lower-cased before the control character is dropped, so it is not special any more.
    """
    return "".join(map(str.lower, text)) if "Σ" in text else text.lower()


def _as_id_list(ids: Any) -> list[int]:
    """Accept a list, a numpy array or a Tensor of ids (or a single id)."""
    if hasattr(ids, "numpy") and not hasattr(ids, "tolist"):
        ids = ids.numpy()
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    """The constructor settings found in a Hugging Face ``tokenizer_config.json``."""
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    settings: dict[str, Any] = {}
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars",
                "clean_up_tokenization_spaces"):
        if key in config:
            settings[key] = config[key]
    for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = config.get(key)
        if isinstance(value, dict):  # serialised AddedToken
            value = value.get("content")
        if isinstance(value, str):
            settings[key] = value
    n = config.get("model_max_length")
    # Hugging Face writes int(1e30) for "no limit".
    if isinstance(n, int) and 0 < n <= 1_000_000:
        settings["model_max_length"] = n
    return settings
