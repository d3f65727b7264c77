"""BERT-style encoder (Devlin et al., arXiv:1810.04805) and its heads.

    h = bert(input_ids, attention_mask=mask)             # (B, T, D) last hidden state
    pooled = bert.pool(h)                                 # (B, D) tanh(W h[:, 0] + b)

The encoder is post-LN (`x = LN(x + sublayer(x))`), with learned absolute positions and
segment embeddings. Module and parameter names are Hugging Face's exactly
(`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...;
heads put the encoder under `bert.` and add `cls.predictions.*` or `classifier.*`), so a
real checkpoint loads through the name table in `minitl.io.hf`:

    bert = Bert.from_pretrained("minilm-l6")                       # asset name or directory
    clf = BertForSequenceClassification.from_pretrained(path, num_labels=3)   # new head

`mean_pool` and `encode_sentences` give sentence embeddings the way sentence-transformers
does (mean over the attention mask, then L2 normalisation).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl.autograd_state import no_grad
from minitl.creation import arange, as_tensor, zeros
from minitl.functional import cat
from minitl.io import hf
from minitl.models.configs import BertConfig
from minitl.tensor import Tensor

__all__ = ["Bert", "BertConfig", "BertForMaskedLM", "BertForSequenceClassification",
           "BertForTokenClassification", "encode_sentences", "mean_pool"]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": lambda x: F.gelu(x),  # exact: x Phi(x) with erf
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": lambda x: x.relu(),
}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; use one of "
                         f"{', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's init: N(0, std) weights and embeddings, zero biases, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx] = 0
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _key_mask(attention_mask: Any) -> Tensor | None:
    """(B, T) 1 = token / 0 = padding -> a bool mask (B, 1, 1, T) over the keys."""
    if attention_mask is None:
        return None
    m = as_tensor(attention_mask) != 0
    if m.ndim == 2:
        return m.reshape(m.shape[0], 1, 1, m.shape[1])
    if m.ndim == 3:  # (B, T, T): a full query x key mask
        return m.unsqueeze(1)
    raise ValueError(f"attention_mask must be (B, T) or (B, T, T), got shape {m.shape}")


# ---- the encoder ---------------------------------------------------------------------------

class BertEmbeddings(nn.Module):
    """LayerNorm(word + position + segment embeddings), then dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor | None = None, token_type_ids: Tensor | None = None,
                position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, D)
        b, t = inputs_embeds.shape[:2]
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {t} exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        dev = inputs_embeds.device
        if position_ids is None:
            position_ids = arange(t, device=dev).unsqueeze(0)  # (1, T)
        if token_type_ids is None:
            token_type_ids = zeros(b, t, dtype=np.int64, device=dev)
        x = (inputs_embeds + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; the padding mask hides keys."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = d // config.num_attention_heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_attention_heads, self.attention_head_size
                         ).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, d = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)


class BertSelfOutput(nn.Module):
    """LayerNorm(input + dropout(dense(h))): the residual of the attention sub-layer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, input: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + input)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)  # "self" is Hugging Face's name
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))  # (B, T, 4D)


class BertOutput(BertSelfOutput):
    """LayerNorm(input + dropout(dense(h))): the residual of the feed-forward sub-layer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.layer:
            x = block(x, mask)
        return x


class BertPooler(nn.Module):
    """tanh(dense(h[:, 0])): the [CLS] vector, as pretrained by next-sentence prediction."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.dense(h[:, 0]).tanh()  # (B, D)


class _PretrainedBert(nn.Module):
    """`from_pretrained` / `save_pretrained` shared by the encoder and every head."""

    config: BertConfig
    _optional: tuple[str, ...] = ("pooler.*",)  # canonical keys a checkpoint may lack

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str], *, strict: bool = True,
                        output_loading_info: bool = False, **kwargs: Any) -> Any:
        """Build from a Hugging Face-layout directory (config.json + model.safetensors) or
        an asset name ("minilm-l6"), read with minitl's own safetensors reader.

        Keys may carry a `bert.` prefix or not; `position_ids` buffers and unused
        pretraining heads are ignored; a missing pooler or a new head keeps its fresh
        initialisation. Keyword arguments that are BertConfig fields override config.json
        (e.g. `hidden_dropout_prob=0.0`); the rest go to the constructor (`num_labels=3`).
        The model is returned in eval mode; call `.train()` to fine-tune.

        Returns:
            The model, or `(model, LoadReport)` with `output_loading_info=True`.

        Raises:
            RuntimeError: missing or unexpected keys (each named), or shape mismatches.
        """
        directory = hf.resolve(name_or_dir)
        fields = {f.name for f in dataclasses.fields(BertConfig)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        config = BertConfig.from_hf_dict(hf.read_config(directory), **overrides)
        model = cls(config, **kwargs)
        report = hf.load_weights(
            model, hf.load_hf_state_dict(directory), strip=("bert.",),
            ignore=("*position_ids",), optional=cls._optional, strict=strict,
            source=str(directory))
        model.eval()
        return (model, report) if output_loading_info else model

    def _hf_config(self) -> dict[str, Any]:
        d = self.config.to_hf_dict()
        d["architectures"] = ["BertModel" if type(self) is Bert else type(self).__name__]
        return d

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write config.json and model.safetensors; `from_pretrained` (minitl's or Hugging
        Face's) reads them back."""
        hf.save_hf(self, directory, self._hf_config())


class Bert(_PretrainedBert):
    """The encoder: embeddings, `num_hidden_layers` post-LN blocks and a pooler.

    Args:
        config: sizes and hyper-parameters.
        add_pooling_layer: build `pooler` (the heads that do not use it leave it out, as
            Hugging Face does).

    Shape:
        - input_ids, attention_mask, token_type_ids: (B, T) integers
        - output: (B, T, D) last hidden state
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, input_ids: Any = None, attention_mask: Any = None,
                token_type_ids: Any = None, position_ids: Any = None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        """Last hidden state (B, T, D). `inputs_embeds` (B, T, D) replaces the word
        embedding lookup (soft prompts); positions and segments are still added."""
        dev = self.embeddings.word_embeddings.weight.device  # numpy inputs move there
        ids, tt, pos, mask = (None if a is None else as_tensor(a).to(dev)
                              for a in (input_ids, token_type_ids, position_ids, attention_mask))
        x = self.embeddings(ids, tt, pos, inputs_embeds)  # (B, T, D)
        return self.encoder(x, _key_mask(mask))

    def pool(self, h: Tensor) -> Tensor:
        """The pooled [CLS] vector (B, D) of a last hidden state `h` (B, T, D)."""
        if self.pooler is None:
            raise RuntimeError("this Bert was built with add_pooling_layer=False")
        return self.pooler(h)

    def encode_sentences(self, tokenizer: Any, sentences: Sequence[str],
                         **kwargs: Any) -> Tensor:
        """Sentence embeddings (N, D) of this encoder: see `minitl.models.encode_sentences`."""
        return encode_sentences(self, tokenizer, sentences, **kwargs)


# ---- heads ---------------------------------------------------------------------------------

class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    """transform, then `decoder` (its weight tied to the word embeddings) plus `bias`."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(zeros(config.vocab_size))
        # Registered under both names, as in Hugging Face: state dicts list
        # `cls.predictions.bias` and `cls.predictions.decoder.bias`, one Parameter.
        self.decoder.bias = self.bias

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.transform(h))  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, h: Tensor) -> Tensor:
        return self.predictions(h)


class BertForMaskedLM(_PretrainedBert):
    """The encoder (without pooler) and the masked-LM head; returns logits (B, T, V).

    `cls.predictions.decoder.weight` IS `bert.embeddings.word_embeddings.weight` (one
    Parameter), so both uses add into the same gradient.
    """

    _optional: tuple[str, ...] = ("cls.predictions.*",)

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = Bert(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.cls.apply(lambda m: _init_weights(m, config.initializer_range))
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids: Any = None, attention_mask: Any = None,
                token_type_ids: Any = None, **kwargs: Any) -> Tensor:
        return self.cls(self.bert(input_ids, attention_mask, token_type_ids, **kwargs))


class BertForSequenceClassification(_PretrainedBert):
    """Encoder, pooler, dropout and a linear `classifier`; returns logits (B, num_labels)."""

    _optional: tuple[str, ...] = ("classifier.*", "pooler.*")
    _pooling = True  # the token-level subclass has no pooler

    def __init__(self, config: BertConfig, num_labels: int = 2) -> None:
        super().__init__(config)
        self.num_labels = num_labels
        self.bert = Bert(config, add_pooling_layer=self._pooling)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        _init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: Any = None, attention_mask: Any = None,
                token_type_ids: Any = None, **kwargs: Any) -> Tensor:
        h = self.bert(input_ids, attention_mask, token_type_ids, **kwargs)  # (B, T, D)
        return self.classifier(self.dropout(self.bert.pool(h)))  # (B, num_labels)

    def _hf_config(self) -> dict[str, Any]:
        d = super()._hf_config()
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return d


class BertForTokenClassification(BertForSequenceClassification):
    """Encoder (no pooler), dropout and a per-token `classifier`; logits (B, T, num_labels)."""

    _optional: tuple[str, ...] = ("classifier.*",)
    _pooling = False

    def forward(self, input_ids: Any = None, attention_mask: Any = None,
                token_type_ids: Any = None, **kwargs: Any) -> Tensor:
        h = self.bert(input_ids, attention_mask, token_type_ids, **kwargs)  # (B, T, D)
        return self.classifier(self.dropout(h))  # (B, T, num_labels)


# ---- sentence embeddings -------------------------------------------------------------------

def mean_pool(h: Tensor, attention_mask: Any) -> Tensor:
    """Mean of the token vectors `h` (B, T, D) where `attention_mask` (B, T) is 1 -> (B, D)."""
    m = as_tensor(attention_mask).to(h.device, h.dtype).unsqueeze(-1)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def encode_sentences(model: Bert, tokenizer: Any, sentences: Sequence[str],
                     batch_size: int = 32, max_length: int | None = None,
                     normalize: bool = True) -> Tensor:
    """Sentence embeddings (N, D): mean over the attention mask, then L2-normalised
    (all-MiniLM-L6-v2's recipe). Runs in eval mode without gradients.

    Args:
        model: the encoder.
        tokenizer: a WordPieceTokenizer (anything with the Hugging Face call signature).
        sentences: the texts.
        batch_size: sentences per forward pass (each batch is padded to its longest).
        max_length: truncate longer inputs (default: max_position_embeddings;
            sentence-transformers runs all-MiniLM-L6-v2 with 256, which only matters for
            texts longer than that).
        normalize: divide each embedding by its L2 norm.
    """
    if isinstance(sentences, str):
        raise TypeError("encode_sentences takes a list of strings; wrap a single one in a list")
    limit = model.config.max_position_embeddings if max_length is None else max_length
    was_training = model.training
    model.eval()
    out = []
    try:
        with no_grad():
            for i in range(0, len(sentences), batch_size):
                enc = tokenizer(list(sentences[i:i + batch_size]), padding=True,
                                truncation=True, max_length=limit, return_tensors="np")
                h = model(enc["input_ids"], attention_mask=enc["attention_mask"],
                          token_type_ids=enc.get("token_type_ids"))
                out.append(mean_pool(h, enc["attention_mask"]))
    finally:
        model.train(was_training)
    if not out:
        return zeros(0, model.config.hidden_size)
    emb = cat(out, dim=0) if len(out) > 1 else out[0]
    return F.normalize(emb, dim=-1) if normalize else emb
