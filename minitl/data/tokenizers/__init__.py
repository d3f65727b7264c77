"""Tokenizers, pure Python: characters, byte-level BPE (GPT-2 style) and BERT WordPiece.

- :class:`CharTokenizer`: one id per character, vocabulary from a corpus.
- :class:`ByteBPETokenizer`: trained from scratch on any text; lossless on any Unicode.
- :class:`WordPieceTokenizer`: loads a BERT ``vocab.txt``; ids equal Hugging Face's.
"""

from minitl.data.tokenizers.basic import BasicTokenizer, greedy_longest_match, load_vocab
from minitl.data.tokenizers.bpe import GPT2_SPLIT_PATTERN, ByteBPETokenizer, bytes_to_unicode
from minitl.data.tokenizers.char import CharTokenizer
from minitl.data.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "BasicTokenizer",
    "ByteBPETokenizer",
    "CharTokenizer",
    "WordPieceTokenizer",
    "bytes_to_unicode",
    "greedy_longest_match",
    "load_vocab",
]
