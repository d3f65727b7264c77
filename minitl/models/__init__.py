"""Models: a BERT-style encoder, GPT- and LLaMA-style decoders, a ResNet-style CNN and a Vision
Transformer, with heads.

Each model file holds the modules and nothing about training; the `@dataclass` configs
with their named sizes live in `minitl.models.configs`.
"""

from minitl.models.bert import (
    Bert,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    encode_sentences,
    mean_pool,
)
from minitl.models.configs import BertConfig, GPTConfig, LlamaConfig, ResNetConfig, ViTConfig
from minitl.models.gpt import GPT, KVCache
from minitl.models.llama import LlamaForCausalLM
from minitl.models.resnet import BasicBlock, ResNet
from minitl.models.sentence_classifier import SentenceClassifier
from minitl.models.vit import ViT

__all__ = [
    "GPT", "BasicBlock", "Bert", "BertConfig", "BertForMaskedLM",
    "BertForSequenceClassification", "BertForTokenClassification", "GPTConfig", "KVCache",
    "LlamaConfig", "LlamaForCausalLM", "ResNet", "ResNetConfig", "SentenceClassifier", "ViT",
    "ViTConfig",
    "encode_sentences", "mean_pool",
]
