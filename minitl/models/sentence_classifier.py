"""The sentence classifier `minitl finetune` trains: a BERT encoder, its sentence embedding
(token states mean-pooled over the attention mask, then L2-normalised) and a linear head.

    model = SentenceClassifier.from_pretrained("minilm-l6", num_labels=2)
    logits = model(batch["input_ids"], batch["attention_mask"])        # (B, 2)

The head reads the encoder's own sentence embedding, the one all-MiniLM-L6-v2 was trained
to produce, not BERT's [CLS] pooler (tanh(dense(h[:, 0]))), which that model never trained:
that is the difference from `BertForSequenceClassification`. Parameter names are Hugging
Face's (`bert.*`, `classifier.*`), so a state dict, a LoRA adapter in PEFT layout and the
encoder part of an export mean the same thing in minitl and in `transformers`.
"""

from __future__ import annotations

import os
from typing import Any

import minitl.nn.functional as F
from minitl import nn
from minitl.models.bert import Bert, mean_pool
from minitl.tensor import Tensor

__all__ = ["SentenceClassifier", "sentence_embedding"]


def sentence_embedding(encoder: nn.Module, batch: dict[str, Any]) -> Tensor:
    """(B, D) mean-pooled over `batch["attention_mask"]`, then L2-normalised."""
    m = batch["attention_mask"]
    return F.normalize(mean_pool(encoder(batch["input_ids"], attention_mask=m), m), dim=-1)


class SentenceClassifier(nn.Module):
    """Encoder, mean pooling over the attention mask, L2 normalisation, dropout, linear
    `classifier`.

    Args:
        encoder: a `Bert` (its pooler, if any, is not used).
        num_labels: output classes.
        dropout: on the sentence embedding, before the head.

    Shape:
        - input_ids, attention_mask: (B, T); output: logits (B, num_labels)
    """

    def __init__(self, encoder: Bert, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.bert = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, 0.0, encoder.config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str], num_labels: int,
                        dropout: float | None = None) -> SentenceClassifier:
        """A pretrained encoder (asset name or Hugging Face-layout directory) under a new,
        randomly initialised head; `dropout` defaults to the encoder's hidden dropout.
        Returned in eval mode, like every `from_pretrained`; call `.train()` to fine-tune."""
        encoder = Bert.from_pretrained(name_or_dir, add_pooling_layer=False)
        model = cls(encoder, num_labels,
                    encoder.config.hidden_dropout_prob if dropout is None else dropout)
        model.eval()
        return model

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def embed(self, input_ids: Any, attention_mask: Any) -> Tensor:
        """The sentence embedding (B, D): mean-pooled, L2-normalised (the encoder's own)."""
        return sentence_embedding(self.bert, {"input_ids": input_ids,
                                              "attention_mask": attention_mask})

    def classify(self, emb: Tensor) -> Tensor:
        return self.classifier(self.dropout(emb))  # (B, num_labels)

    def forward(self, input_ids: Any, attention_mask: Any) -> Tensor:
        return self.classify(self.embed(input_ids, attention_mask))
