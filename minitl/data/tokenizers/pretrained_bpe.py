"""A pretrained byte-level BPE tokenizer read from a GGUF file's metadata (SmolLM2, GPT-2 style).

    tok = BPETokenizer.from_pretrained("smollm2-135m")     # an asset, a .gguf file or its folder
    ids = tok.encode("A gripping, funny film.")             # ids equal transformers' for the file
    tok.decode(ids)                                          # the text again
    tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)

A GGUF file carries its tokenizer as metadata under llama.cpp's keys: `tokenizer.ggml.model`
("gpt2" = byte-level BPE), `.tokens` (id -> token string in GPT-2's byte alphabet), `.merges`
("a b", best first), `.token_type` (1 normal, 3 control, 4 user-defined), the BOS/EOS/pad/unknown
ids, `.pre` (which pre-tokenizer the merges were learned with) and `tokenizer.chat_template`.

Pre-tokenizers, as llama.cpp's llama-vocab.cpp names them:
  "gpt2" / "gpt-2" / "default"   GPT-2's regex
  "smollm" / "starcoder"         every number character alone (Hugging Face's
                                 `Digits(individual_digits=True)`), then GPT-2's regex
GPT-2's regex uses \\p{L} (letters), \\p{N} (numbers) and \\s (White_Space); the standard `re`
module has no property classes, so they are built here from `unicodedata` (`\\p{N}` is `\\d`
plus the categories Nl and No; `\\p{L}` is what `re`'s `\\w` holds besides numbers and "_"),
and `\\s` is spelled out, since `re`'s `\\s` also holds U+001C-U+001F, which are not
White_Space. `tests/test_llama_tokenizer.py` checks every code point against the `regex`
module's classes.

Control and user-defined tokens (`<|im_start|>`, `<|endoftext|>`) are matched whole in the
text, as transformers does. Only the ChatML chat template (`<|im_start|>role\\ncontent
<|im_end|>\\n`, with the default system prompt the template writes) is rendered; minitl has no
Jinja interpreter, and another template raises NotImplementedError instead of guessing.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from minitl.data.tokenizers.bpe import ByteBPETokenizer, bytes_to_unicode

__all__ = ["BPETokenizer", "gpt2_pattern"]

_CONTROL, _USER_DEFINED = 3, 4
# Unicode White_Space (what \s means to the regex engines of Hugging Face and llama.cpp).
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PRE_TOKENIZERS = ("default", "gpt2", "gpt-2", "smollm", "starcoder")
_DIGITS_ALONE = ("smollm", "starcoder")
_classes: tuple[str, str] | None = None


def _number_ranges() -> str:
    """Characters of categories Nl and No as a character-class body (\\d holds Nd)."""
    out, start, prev = [], -2, -2
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)) in ("Nl", "No"):
            if cp != prev + 1:
                if start >= 0:
                    out.append((start, prev))
                start = cp
            prev = cp
    out.append((start, prev))
    return "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in out)


def _letter_number_classes() -> tuple[str, str]:
    """(\\p{L}, \\p{N}) as `re` character classes; computed once (a fifth of a second)."""
    global _classes
    if _classes is None:
        extra = _number_ranges()
        _classes = (rf"[^\W\d_{extra}]", rf"[\d{extra}]")
    return _classes


def gpt2_pattern() -> str:
    """GPT-2's pre-tokenizer regex with exact Unicode classes (see the module docstring)."""
    letter, number = _letter_number_classes()
    return (rf"'s|'t|'re|'ve|'m|'ll|'d| ?{letter}+| ?{number}+| ?(?:[^{_WS}\w]|_)+"
            rf"|[{_WS}]+(?![^{_WS}])|[{_WS}]+")


def _token_string(token: str, alphabet: set[str], table: dict[int, str]) -> str:
    """A vocabulary entry in GPT-2's byte alphabet (a few files store raw text instead)."""
    if set(token) <= alphabet:
        return token
    return "".join(table[b] for b in token.encode("utf-8"))


class BPETokenizer(ByteBPETokenizer):
    """Byte-level BPE with a pretrained vocabulary, special tokens and a chat template.

    Args:
        vocab, merges, special_tokens: as for ByteBPETokenizer.
        pre_tokenizer: one of PRE_TOKENIZERS (llama.cpp's `tokenizer.ggml.pre` names).
        bos_token_id, eos_token_id, pad_token_id, unk_token_id: ids from the file, or None.
        add_bos_token, add_eos_token: what `encode(..., add_special_tokens=True)` adds.
        chat_template: the Jinja template the file carries (ChatML is rendered).
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                 special_tokens: dict[str, int] | None = None, pre_tokenizer: str = "gpt2",
                 bos_token_id: int | None = None, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, unk_token_id: int | None = None,
                 add_bos_token: bool = False, add_eos_token: bool = False,
                 chat_template: str | None = None) -> None:
        if pre_tokenizer not in PRE_TOKENIZERS:
            raise ValueError(f"pre-tokenizer {pre_tokenizer!r} is not supported; minitl has "
                             f"{', '.join(PRE_TOKENIZERS)}")
        super().__init__(vocab, merges, special_tokens, gpt2_pattern(), skip_unknown_bytes=True)
        self.pre_tokenizer = pre_tokenizer
        self._digits = (re.compile(rf"({_letter_number_classes()[1]})")
                        if pre_tokenizer in _DIGITS_ALONE else None)
        n = self.vocab_size

        def token_id(name: str, value: int | None) -> int | None:
            if value is not None and not 0 <= int(value) < n:
                raise ValueError(f"{name} {value} is outside the vocabulary of {n} tokens")
            return None if value is None else int(value)

        self.bos_token_id = token_id("bos_token_id", bos_token_id)
        self.eos_token_id = token_id("eos_token_id", eos_token_id)
        self.pad_token_id = token_id("pad_token_id", pad_token_id)
        self.unk_token_id = token_id("unk_token_id", unk_token_id)
        self.add_bos_token, self.add_eos_token = bool(add_bos_token), bool(add_eos_token)
        self.chat_template = chat_template

    # ---- loading --------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, source: Any) -> BPETokenizer:
        """From a GGUF file (a path or an open minitl.io.gguf.GGUFFile).

        Raises:
            ValueError: the file has no byte-level BPE tokenizer, or its metadata is malformed
                (the message names the key).
        """
        from minitl.io.gguf import GGUFFile, read_gguf

        f = source if isinstance(source, GGUFFile) else read_gguf(source)
        m = f.metadata

        def get(key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
            full = f"tokenizer.{key}"
            if full not in m:
                if default is ...:
                    raise ValueError(f"{f.path}: no {full} in the metadata")
                return default
            value = m[full]
            if kind is list and getattr(value, "size", None) == 0:
                value = []  # an empty array is written with a numeric element type
            if not isinstance(value, kind):
                raise ValueError(f"{f.path}: {full} is a {type(value).__name__}, expected "
                                 f"{getattr(kind, '__name__', kind)}")
            return value

        model = get("ggml.model", str)
        if model != "gpt2":
            raise ValueError(f"{f.path}: tokenizer.ggml.model is {model!r}; BPETokenizer "
                             "reads byte-level BPE ('gpt2') vocabularies")
        tokens = get("ggml.tokens", list)
        merges_raw = get("ggml.merges", list)
        types = get("ggml.token_type", object, None)
        if any(not isinstance(t, str) for t in tokens):
            raise ValueError(f"{f.path}: tokenizer.ggml.tokens must hold strings")
        if types is not None and len(types) != len(tokens):
            raise ValueError(f"{f.path}: tokenizer.ggml.token_type has {len(types)} entries "
                             f"for {len(tokens)} tokens")
        table = bytes_to_unicode()
        alphabet = set(table.values())
        vocab: dict[str, int] = {}
        special: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            kind = int(types[i]) if types is not None else 1
            if kind in (_CONTROL, _USER_DEFINED) and tok:
                target, key = special, tok
            else:
                target, key = vocab, _token_string(tok, alphabet, table)
            if key in vocab or key in special:
                raise ValueError(f"{f.path}: token {tok!r} appears twice in tokenizer.ggml.tokens "
                                 f"(ids {vocab.get(key, special.get(key))} and {i})")
            target[key] = i
        merges: list[tuple[str, str]] = []
        for k, line in enumerate(merges_raw):
            a, sep, b = line.partition(" ") if isinstance(line, str) else ("", "", "")
            if not sep or not a or not b or " " in b:
                raise ValueError(f"{f.path}: tokenizer.ggml.merges[{k}] = {line!r} is not two "
                                 "tokens separated by one space")
            merges.append((a, b))
        ids = {k: get(f"ggml.{k}", int, None) for k in
               ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")}
        try:
            return cls(vocab, merges, special, pre_tokenizer=get("ggml.pre", str, "default"),
                       bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"],
                       pad_token_id=ids["padding_token_id"],
                       unk_token_id=ids["unknown_token_id"],
                       add_bos_token=get("ggml.add_bos_token", bool, False),
                       add_eos_token=get("ggml.add_eos_token", bool, False),
                       chat_template=get("chat_template", str, None))
        except ValueError as e:
            raise ValueError(f"{f.path}: {e}") from None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> BPETokenizer:
        """From an asset name ("smollm2-135m"), a .gguf file, or a folder holding one."""
        from minitl.io.gguf import resolve_gguf

        return cls.from_gguf(resolve_gguf(name_or_path))

    # ---- encoding -------------------------------------------------------------------------

    def _words(self, text: str) -> list[str]:
        if self._digits is None:
            return self._split.findall(text)
        words: list[str] = []
        for k, piece in enumerate(self._digits.split(text)):
            if k % 2:  # a number character, alone
                words.append(piece)
            elif piece:
                words.extend(self._split.findall(piece))
        return words

    def encode(self, text: str, split_special_tokens: bool = False,
               add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; BOS/EOS added where the file asks for them (SmolLM2: none)."""
        ids = super().encode(text, split_special_tokens)
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        if add_special_tokens and self.add_eos_token and self.eos_token_id is not None:
            ids.append(self.eos_token_id)
        return ids

    def apply_chat_template(self, messages: Iterable[Mapping[str, str]],
                            add_generation_prompt: bool = False,
                            tokenize: bool = True) -> list[int] | str:
        """The conversation as the model was trained to read it (ChatML), as ids or text."""
        template = self.chat_template or ""
        if "<|im_start|>" not in template or "<|im_end|>" not in template:
            raise NotImplementedError("apply_chat_template renders ChatML templates only; this "
                                      "tokenizer's template is "
                                      f"{'missing' if not template else 'another kind'}")
        default = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", template, re.DOTALL)
        text = ""
        for i, msg in enumerate(messages):
            role, content = msg["role"], msg["content"]
            if i == 0 and role != "system" and default is not None:
                text += f"<|im_start|>system\n{default.group(1)}<|im_end|>\n"
            text += f"<|im_start|>{role}\n{content}<|im_end|>\n"
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def save(self, path: str | os.PathLike[str]) -> None:
        raise NotImplementedError("a pretrained BPETokenizer lives in its GGUF file; load it "
                                  "again with BPETokenizer.from_pretrained")

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"pre_tokenizer={self.pre_tokenizer!r}, eos_token_id={self.eos_token_id})")

