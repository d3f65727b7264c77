"""Character-level tokenizer: one id per Unicode code point seen in a training corpus.

The vocabulary is the special tokens first (``<pad>`` = 0, ``<unk>`` = 1, then ``<bos>`` and
``<eos>`` when asked for), followed by the corpus characters in code-point order, so the same
corpus always gives the same ids. Characters never seen in training encode to ``<unk>``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

from minitl.data.tokenizers._files import read_json, write_json

__all__ = ["CharTokenizer"]

_KIND = "CharTokenizer"


class CharTokenizer:
    """Maps each character to an id.

    Args:
        chars: the ordinary characters, in id order (ids start after the special tokens).
        pad_token, unk_token: always present, ids 0 and 1.
        bos_token, eos_token: optional; when given they take the next ids and ``encode``
            wraps sequences in them.
    """

    def __init__(
        self,
        chars: Sequence[str],
        *,
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> None:
        self.pad_token, self.unk_token = pad_token, unk_token
        self.bos_token, self.eos_token = bos_token, eos_token
        specials = [t for t in (pad_token, unk_token, bos_token, eos_token) if t is not None]
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct, got {specials}")
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"CharTokenizer characters must be single code points, got {c!r}")
        # A special token longer than one character can never collide with a character.
        self.itos: list[str] = specials + [c for c in chars if c not in specials]
        if len(set(self.itos)) != len(self.itos):
            raise ValueError("duplicate characters in the vocabulary")
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        self.special_ids = frozenset(range(len(specials)))

    # ---------------------------------------------------------------- construction

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        *,
        min_frequency: int = 1,
        add_bos_eos: bool = False,
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
    ) -> CharTokenizer:
        """Build the vocabulary from ``text`` (a string or an iterable of strings).

        Characters seen fewer than ``min_frequency`` times are left out (they become
        ``<unk>``). ``add_bos_eos`` adds ``<bos>``/``<eos>``.
        """
        counts: Counter[str] = Counter()
        for chunk in [text] if isinstance(text, str) else text:
            counts.update(chunk)
        chars = sorted(c for c, n in counts.items() if n >= min_frequency)
        bos, eos = ("<bos>", "<eos>") if add_bos_eos else (None, None)
        return cls(chars, pad_token=pad_token, unk_token=unk_token, bos_token=bos, eos_token=eos)

    from_corpus = train

    # ---------------------------------------------------------------- ids

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_token_id(self) -> int:
        return self.stoi[self.pad_token]

    @property
    def unk_token_id(self) -> int:
        return self.stoi[self.unk_token]

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self.stoi[self.bos_token]

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.stoi[self.eos_token]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of the characters of ``text``; wrapped in ``<bos>``/``<eos>`` if the
        tokenizer has them and ``add_special_tokens``."""
        unk = self.unk_token_id
        ids = [self.stoi.get(c, unk) for c in text]
        if add_special_tokens:
            if self.bos_token is not None:
                ids.insert(0, self.stoi[self.bos_token])
            if self.eos_token is not None:
                ids.append(self.stoi[self.eos_token])
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Concatenate the characters; special tokens are dropped or written out."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (size {len(self.itos)})")
            if skip_special_tokens and i in self.special_ids:
                continue
            out.append(self.itos[i])
        return "".join(out)

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as JSON (atomically)."""
        n_special = len(self.special_ids)
        write_json(path, _KIND, {
            "special_tokens": {"pad": self.pad_token, "unk": self.unk_token,
                               "bos": self.bos_token, "eos": self.eos_token},
            "chars": self.itos[n_special:],
        })

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
        doc = read_json(path, _KIND)
        sp = doc["special_tokens"]
        return cls(doc["chars"], pad_token=sp["pad"], unk_token=sp["unk"],
                   bos_token=sp.get("bos"), eos_token=sp.get("eos"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
