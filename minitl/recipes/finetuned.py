"""The directory `minitl finetune` writes, and `load_finetuned`, which reads it back.

    clf = load_finetuned("runs/lora")
    clf.predict(["a gripping, funny film"])          # ["positive"]
    clf.predict_proba(texts)                          # (N, C) probabilities

A finetune directory describes itself:

  config.json          the encoder's Hugging Face config (none for bow) with `id2label`,
                       `label2id` and a "minitl" section: strategy, backbone, pooling
                       ("mean", L2-normalised), max_length and what the weights file holds
  vocab.txt, tokenizer_config.json   the tokenizer (none for bow)
  model.safetensors    the whole classifier, `bert.*` + `classifier.*` (scratch, full,
                       gradual, discriminative, setfit, self-train, intermediate):
                       needs nothing else
  adapter_config.json + adapter_model.safetensors   a LoRA adapter in PEFT layout, its head
                       among `modules_to_save` (lora, setfit-lora): on top of the backbone
  adapter.safetensors  bottleneck adapters or a soft prompt, and the head (adapter, prompt),
                       for `minitl.transfer.load_adapter_state_dict`: on top of the backbone
  head.safetensors     the head alone on the frozen backbone (zero-shot, prototype, head)
  bow.safetensors      the bag-of-words model: weights, idf; vocabulary in the metadata
  metrics.json, ledger.json   what the run measured

The backbone a directory builds on is named in config.json (an asset name, or an absolute
directory); `load_finetuned(dir, backbone=...)` points elsewhere when it moved.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minitl import io
from minitl import transfer as tl
from minitl.data import WordPieceTokenizer
from minitl.io import hf
from minitl.io.peft import ADAPTER_CONFIG, load_peft_adapter, save_peft_adapter
from minitl.io.safetensors import load_metadata
from minitl.models.bert import Bert
from minitl.models.configs import BertConfig
from minitl.models.sentence_classifier import SentenceClassifier
from minitl.recipes.bow import BowClassifier, TfidfVectorizer
from minitl.recipes.sentence_model import Backbone, log_probabilities, predict_logits
from minitl.recipes.text_data import encode_texts
from minitl.tensor import Tensor

__all__ = ["FORMAT", "FinetunedClassifier", "load_finetuned", "save_finetuned",
           "weights_kind"]

FORMAT = 1  # config.json["minitl"]["format"]: bumped when the layout changes
SAVE_WHOLE = ("scratch", "full", "gradual", "discriminative", "setfit", "self-train",
              "intermediate")
HEAD_ONLY = ("zero-shot", "prototype", "head")
PEFT_LORA = ("lora", "setfit-lora")
MINITL_ADAPTERS = ("adapter", "prompt")
WEIGHTS = {"model": "model.safetensors", "peft": "adapter_model.safetensors",
           "adapter": "adapter.safetensors", "head": "head.safetensors",
           "bow": "bow.safetensors"}


def weights_kind(strategy: str) -> str:
    """Which part of the classifier a strategy's directory stores: model, peft, adapter,
    head or bow (see the module docstring)."""
    for kind, group in (("model", SAVE_WHOLE), ("head", HEAD_ONLY), ("peft", PEFT_LORA),
                        ("adapter", MINITL_ADAPTERS), ("bow", ("bow",))):
        if strategy in group:
            return kind
    raise ValueError(f"unknown strategy {strategy!r}")


def _backbone_ref(name_or_dir: str) -> str:
    """Asset names stay names; directories become absolute so the run dir can move."""
    return os.path.abspath(name_or_dir) if os.path.isdir(name_or_dir) else name_or_dir


def save_finetuned(fitted: Any, out: str | os.PathLike[str], backbone: Backbone, *,
                   label_names: Sequence[str], max_length: int, task: str = "",
                   settings: dict[str, Any] | None = None) -> str:
    """Write `fitted` (a recipes.text_classification.Fitted) as a finetune directory;
    returns the weights file's name. `settings` are the recipe's (lora_r, lora_alpha,
    adapter_bottleneck, prompt_tokens) needed to rebuild adapters."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = weights_kind(fitted.strategy)
    s = settings or {}
    section: dict[str, Any] = {
        "format": FORMAT, "strategy": fitted.strategy, "weights": WEIGHTS[kind],
        "task": task, "max_length": int(max_length),
        "backbone": None if kind in ("model", "bow") else _backbone_ref(backbone.name),
        "source_backbone": backbone.name,
    }
    id2label = {str(i): n for i, n in enumerate(label_names)}
    label2id = {n: i for i, n in enumerate(label_names)}
    if kind == "bow":
        _save_bow(fitted.bow, out / WEIGHTS[kind], section)
        io.write_json(out / "config.json", {"architectures": ["BowClassifier"],
                                          "id2label": id2label, "label2id": label2id,
                                          "minitl": section})
        return WEIGHTS[kind]
    model: SentenceClassifier = fitted.model
    section.update(pooling="mean", normalize=True, head="classifier",
                   dropout=float(model.dropout.p))
    if kind == "model":
        io.save(model.state_dict(), out / WEIGHTS[kind], metadata={"format": "pt"})
    elif kind == "head":
        io.save({k: v for k, v in model.state_dict().items() if k.startswith("classifier.")},
                out / WEIGHTS[kind], metadata={"format": "pt"})
    elif kind == "peft":
        save_peft_adapter(model, out, base_model_name_or_path=section["backbone"],
                          task_type="FEATURE_EXTRACTION")
        _tag_peft_config(out, section, len(label_names))
    else:
        section.update(adapter_bottleneck=int(s.get("adapter_bottleneck", 32)),
                       prompt_tokens=int(s.get("prompt_tokens", 8)))
        io.save(tl.adapter_state_dict(model), out / WEIGHTS[kind], metadata={"format": "pt"})
    config = {**model.bert.config.to_hf_dict(), "architectures": ["SentenceClassifier"],
              "id2label": id2label, "label2id": label2id, "minitl": section}
    io.write_json(out / "config.json", config)
    backbone.tokenizer.save_pretrained(out)
    return WEIGHTS[kind]


def _tag_peft_config(out: Path, section: dict[str, Any], num_labels: int) -> None:
    """PEFT ignores keys it does not know; the pooling and the head go on record for
    readers of adapter_config.json alone."""
    path = out / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config["minitl_classifier"] = {"pooling": "mean", "normalize": True,
                                   "head": "classifier", "num_labels": num_labels,
                                   "strategy": section["strategy"]}
    io.write_json(path, config)


def _save_bow(bow: BowClassifier, path: Path, section: dict[str, Any]) -> None:
    assert bow.linear is not None
    vec = bow.vectorizer.state_dict()
    sd = dict(bow.linear.state_dict())
    sd["idf"] = Tensor(np.asarray(vec["idf"], np.float64))
    io.save(sd, path, metadata={
        "vocabulary": json.dumps(list(vec["vocabulary"])),
        "vectorizer": json.dumps({k: v for k, v in vec.items()
                                  if k not in ("idf", "vocabulary")})})


@dataclass
class FinetunedClassifier:
    """A finetune directory loaded for prediction (eval mode, no gradients)."""

    directory: Path
    strategy: str
    label_names: tuple[str, ...]
    max_length: int
    model: SentenceClassifier | None  # None for bow
    tokenizer: WordPieceTokenizer | None
    bow: BowClassifier | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, C) scores: the head's logits (bow: log-probabilities)."""
        texts = _texts(texts)
        if self.bow is not None:
            return np.log(np.maximum(self.bow.predict_proba(texts), 1e-30))
        assert self.model is not None and self.tokenizer is not None
        data = encode_texts(self.tokenizer, texts, np.zeros(len(texts)), self.max_length)
        return predict_logits(self.model, data, batch_size)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, C) class probabilities; rows sum to 1."""
        return np.exp(log_probabilities(self.logits(texts, batch_size)))

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[str]:
        """The most probable label name of each text."""
        return [self.label_names[i] for i in self.logits(texts, batch_size).argmax(-1)]


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty list of strings")
    return texts


def read_finetuned_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json of a finetune directory, checked for the fields loading needs."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        hint = (" (an LLM finetune directory: use `minitl generate --adapter`)"
                if (directory / "adapter.safetensors").is_file() else "")
        raise FileNotFoundError(f"{directory} is not a minitl finetune directory: "
                                f"config.json is missing{hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    section = config.get("minitl") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        why = "not written by minitl finetune (a plain checkpoint: Bert.from_pretrained)"
        raise ValueError(f"{path} has no \"minitl\" section: {why}")  # noqa: TRY004
    for key in ("strategy", "weights", "max_length"):
        if key not in section:
            raise ValueError(f"{path}: the minitl section lacks {key!r}")
    if section.get("format", 0) > FORMAT:
        raise ValueError(f"{path}: format {section['format']} is newer than this minitl "
                         f"reads ({FORMAT}); upgrade minitl")
    weights_kind(section["strategy"])  # ValueError for an unknown strategy
    if not (directory / section["weights"]).is_file():
        raise FileNotFoundError(f"{directory}: {section['weights']} is missing")
    return config


def _label_names(config: dict[str, Any], path: Path) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise ValueError(f"{path}/config.json: id2label is missing")
    try:
        return tuple(str(id2label[str(i)]) for i in range(len(id2label)))
    except KeyError:
        raise ValueError(f"{path}/config.json: id2label keys must be 0..{len(id2label) - 1}, "
                         f"got {sorted(id2label)}") from None


def load_finetuned(directory: str | os.PathLike[str], *, backbone: str | None = None
                   ) -> FinetunedClassifier:
    """The classifier `minitl finetune --out DIR` wrote, ready to predict.

    Args:
        directory: the finetune directory.
        backbone: where the pretrained encoder is, for directories that store only adapters
            or a head (default: the one config.json names).

    Raises:
        FileNotFoundError: not a finetune directory, or a file it needs is missing.
        ValueError / RuntimeError: a damaged file, or weights that do not fit the model.
    """
    directory = Path(directory)
    config = read_finetuned_config(directory)
    section = config["minitl"]
    strategy, kind = section["strategy"], weights_kind(section["strategy"])
    labels = _label_names(config, directory)
    weights = directory / section["weights"]
    if kind == "bow":
        return FinetunedClassifier(directory, strategy, labels, int(section["max_length"]),
                                   None, None, _load_bow(weights), config)
    tokenizer = WordPieceTokenizer.from_pretrained(directory)
    if kind == "model":
        encoder = Bert(BertConfig.from_hf_dict(hf.read_config(directory)),
                       add_pooling_layer=False)
    else:
        source = backbone or section.get("backbone")
        if not source:
            raise ValueError(f"{directory}/config.json names no backbone; pass backbone=")
        try:
            encoder = Bert.from_pretrained(source, add_pooling_layer=False)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{directory} builds on the backbone {source!r}, which "
                                    f"is not there ({e}); pass backbone= (or --backbone)"
                                    ) from None
    model = SentenceClassifier(encoder, len(labels), float(section.get("dropout", 0.1)))
    if kind == "model":
        model.load_state_dict(io.load(weights))
    elif kind == "head":
        model.classifier.load_state_dict({k.removeprefix("classifier."): v
                                          for k, v in io.load(weights).items()})
    elif kind == "peft":
        load_peft_adapter(model, directory)
    else:
        _attach_adapters(model, strategy, section)
        tl.load_adapter_state_dict(model, io.load(weights))
    model.eval()
    return FinetunedClassifier(directory, strategy, labels, int(section["max_length"]),
                               model, tokenizer, None, config)


def _attach_adapters(model: SentenceClassifier, strategy: str, section: dict[str, Any]
                     ) -> None:
    if strategy == "adapter":
        tl.apply_adapters(model, bottleneck=int(section["adapter_bottleneck"]),
                          placement="houlsby", modules_to_save=("classifier",))
    else:
        tl.apply_prompt_tuning(model, n_tokens=int(section["prompt_tokens"]),
                               modules_to_save=("classifier",))


def _load_bow(path: Path) -> BowClassifier:
    from minitl import nn

    sd = io.load(path)
    meta = load_metadata(path)
    for key in ("vocabulary", "vectorizer"):
        if key not in meta:
            raise ValueError(f"{path}: the metadata lacks {key!r} (not a minitl bow file)")
    for key in ("weight", "bias", "idf"):
        if key not in sd:
            raise ValueError(f"{path}: tensor {key!r} is missing")
    state = {**json.loads(meta["vectorizer"]), "vocabulary": json.loads(meta["vocabulary"]),
             "idf": sd["idf"].numpy()}
    bow = BowClassifier()
    bow.vectorizer = TfidfVectorizer.from_state(state)
    c, v = sd["weight"].shape
    if v != len(state["vocabulary"]):
        raise ValueError(f"{path}: weight has {v} columns for {len(state['vocabulary'])} terms")
    bow.linear = nn.Linear(v, c)
    bow.linear.load_state_dict({"weight": sd["weight"], "bias": sd["bias"]})
    return bow


def copy_model(clf: FinetunedClassifier) -> SentenceClassifier:
    """A deep copy of the loaded classifier (exports merge into the copy, not the original)."""
    if clf.model is None:
        raise ValueError(f"{clf.directory}: a {clf.strategy} model has no encoder to copy")
    return copy.deepcopy(clf.model)
