"""Tokenizers, pure Python: characters, byte-level BPE (GPT-2 style) and BERT WordPiece.

- :class:`CharTokenizer`: one id per character, vocabulary from a corpus.
- :class:`ByteBPETokenizer`: trained from scratch on any text; lossless on any Unicode.
- :class:`WordPieceTokenizer`: loads a BERT ``vocab.txt``; ids equal Hugging Face's.
- :class:`BPETokenizer`: a pretrained byte-level BPE read from a GGUF file (SmolLM2); ids
  equal transformers'.
"""

from minitl.data.tokenizers.basic import BasicTokenizer, greedy_longest_match, load_vocab
from minitl.data.tokenizers.bpe import GPT2_SPLIT_PATTERN, ByteBPETokenizer, bytes_to_unicode
from minitl.data.tokenizers.char import CharTokenizer
from minitl.data.tokenizers.pretrained_bpe import BPETokenizer
from minitl.data.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "BPETokenizer",
    "BasicTokenizer",
    "ByteBPETokenizer",
    "CharTokenizer",
    "WordPieceTokenizer",
    "bytes_to_unicode",
    "greedy_longest_match",
    "load_vocab",
]
