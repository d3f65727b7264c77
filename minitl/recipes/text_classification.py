"""Sentence classification from a pretrained encoder, one way per strategy.

Shared by `minitl demo`, `minitl finetune` and `benchmarks/transfer/*`:

    bb = load_backbone("minilm-l6")                      # pristine encoder + tokenizer
    task = load_task("movie-reviews", bb.tokenizer, n_labels=100, eval_split="validation")
    fitted = fit("auto", bb, task.train, RecipeConfig(), dataset=task.name,
                 label_names=task.label_names)           # never sees task.eval
    score(fitted, bb, task.eval)                         # {"accuracy", "macro_f1"}
    model, result = run_strategy("full", bb, task, probe=SourceProbe(...))  # both + ledger

Strategies without labels or without training: `zero-shot` (cosine with label
descriptions), `prototype` (nearest class mean), `bow` (TF-IDF logistic regression, no
pretraining at all). Every other strategy starts its linear head at the zero-shot
classifier (`RecipeConfig.head_init`), so training starts at zero-shot accuracy, not at
chance, and trains for a step budget that grows with the label count
(`minitl.recipes.plans`), at a max_length taken from the data, with warm-up and decay, a
head lr of its own, and model selection on a held-out slice of the labelled set once
there are enough labels. `auto` picks one of them from the label count (`plans.choose`).

The pieces live in text_data (token ids, samples), sentence_model (the classifier),
fewshot (class vectors, pairs), plans (budgets, auto), training (loops) and source_side
(drift probe, replay, EWC); they are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from minitl import nn
from minitl import transfer as tl
from minitl.creation import manual_seed
from minitl.models.bert import Bert
from minitl.recipes import fewshot, plans
from minitl.recipes.bow import BowClassifier, BowConfig
from minitl.recipes.sentence_model import (
    Backbone,
    SentenceClassifier,
    embed_texts,
    evaluate,
    load_backbone,
    log_probabilities,
    metrics,
    predict_logits,
    sentence_embedding,
)
from minitl.recipes.source_side import (
    SourceProbe,
    SourceReplay,
    contrastive_nll,
    dialog_pairs,
    make_ewc,
    source_lines,
)
from minitl.recipes.text_data import (
    EncodedText,
    Task,
    encode_texts,
    load_task,
    make_loader,
    sample_indices,
)
from minitl.recipes.training import (
    Schedule,
    Selection,
    head_steps,
    split_holdout,
    train_classifier,
    train_head,
    train_pairs,
)
from minitl.train.progress import ProgressDisplay

__all__ = ["STRATEGIES", "Backbone", "EncodedText", "Fitted", "RecipeConfig", "RunResult",
           "SentenceClassifier", "SourceProbe", "SourceReplay", "Task", "build_model",
           "contrastive_nll", "dialog_pairs", "encode_texts", "evaluate", "fit", "load_backbone",
           "load_task", "make_ewc", "make_loader", "predict_logits", "run_strategy",
           "sample_indices", "score", "sentence_embedding", "source_lines"]

STRATEGIES: dict[str, str] = {
    "zero-shot": "no labels: cosine with averaged label descriptions, frozen encoder",
    "prototype": "frozen encoder, nearest class mean of the labelled embeddings",
    "bow": "no pretraining: TF-IDF bag of words, logistic regression",
    "scratch": "same architecture, random init, every weight trains",
    "head": "frozen encoder, linear head on cached embeddings, started at zero-shot",
    "full": "every weight trains (planned steps, head started at zero-shot)",
    "gradual": "gradual unfreezing (ULMFiT): head first, then blocks top-down",
    "discriminative": "layer-wise learning rates, x0.8 per block going down",
    "lora": "LoRA r=8 on query/value, plus the head",
    "adapter": "Houlsby bottleneck adapters and LayerNorms, plus the head",
    "prompt": "8 soft-prompt vectors, plus the head",
    "setfit": "contrastive pairs on the encoder (cosine loss), then the head",
    "setfit-lora": "setfit with LoRA factors only: the base stays frozen",
    "self-train": "full, then full again with its confident pseudo-labels on unlabeled text",
    "intermediate": "full, from the encoder first fine-tuned on related labelled sets "
                    "(STILTs: the other sentiment sets, not one target sentence)",
    "auto": "chosen from the label count and the unlabeled text (plans.choose)",
}
FROZEN = ("zero-shot", "prototype", "head")  # the pristine encoder's embeddings suffice
ENCODER = ("scratch", "full", "gradual", "discriminative", "lora", "adapter", "prompt")


@dataclass
class RecipeConfig:
    max_length: int | None = None  # None: from the data (95th percentile, see text_data)
    batch_size: int = 16
    eval_batch_size: int = 64
    seed: int = 0  # head init, dropout, data order, pairs, holdout
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of the steps with a linear warm-up, then linear decay
    steps: int | None = None  # override the planned optimizer steps
    max_steps: int | None = None  # cap on the planned steps (quick runs)
    lr: float | None = None  # override the strategy's peak lr (plans.HYPER)
    head_lr: float | None = None  # override the head's lr (plans.HEAD_LR; head: HYPER)
    select: bool = True  # hold out a slice for model selection where the plan says so
    holdout: int | None = None  # override the plan's held-out labelled sentences
    head_init: str = "zero-shot"  # or "random"
    head_prior: float = 1.0  # head/setfit heads: pull towards the zero-shot head
    pairs_per_example: int | None = None  # setfit (None: about 2,000 pairs in all)
    pseudo_share: float = 0.25  # self-train: share of the unlabeled pool pseudo-labelled
    unlabeled_per_label: int = 20  # self-train: pool size per label (at most)
    lora_r: int = 8
    lora_alpha: float = 16.0
    adapter_bottleneck: int = 32
    prompt_tokens: int = 8
    unfreeze_stages: int = 4  # gradual: head, then the blocks in 3 groups, top-down
    lr_decay: float = 0.8  # discriminative: lr factor per block going down
    ewc: float = 0.0  # EWC strength lambda on the mean-1 Fisher (0: off)
    replay: float = 0.0  # share of all examples that are replayed source lines (0: off)
    distill_weight: float = 1.0  # weight of the embedding-preservation loss on replays
    progress: bool = True  # the Trainer's progress lines on stderr
    log_dir: str | None = None  # the Trainer's metrics.jsonl and loss plot (None: none)

    def __post_init__(self) -> None:
        if self.head_init not in ("zero-shot", "random"):
            raise ValueError(f"head_init must be 'zero-shot' or 'random', got "
                             f"{self.head_init!r}")
        for name in ("batch_size", "eval_batch_size", "lora_r", "adapter_bottleneck",
                     "prompt_tokens", "unfreeze_stages", "unlabeled_per_label"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.pseudo_share <= 1.0:
            raise ValueError(f"pseudo_share must be in (0, 1], got {self.pseudo_share}")


@dataclass
class Fitted:
    """What `fit` produced: a classifier (or a bag-of-words model) and how it was made."""

    strategy: str  # what ran (auto: the chosen one)
    model: SentenceClassifier | None
    bow: BowClassifier | None = None
    frozen: bool = False  # the encoder is the pristine one (embeddings can be cached)
    steps: int = 0
    trainable: int = 0
    total: int = 0
    step_times: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # plan, choice, selection, ...


@dataclass
class _Context:
    backbone: Backbone
    cfg: RecipeConfig
    dataset: str
    label_names: tuple[str, ...]
    max_length: int
    cache: dict[str, np.ndarray] | None
    stream: Any
    step_times: list[float]
    head_from: SentenceClassifier | None = None

    def frozen_embeddings(self, data: EncodedText) -> np.ndarray:
        return frozen_embeddings(self.backbone, data, self.cache, self.cfg.eval_batch_size,
                                 ProgressDisplay(stream=self.stream, enabled=self.cfg.progress))

    def zero_shot_vectors(self, encoder: nn.Module | None = None) -> np.ndarray:
        return fewshot.class_vectors(encoder or self.backbone.encoder, self.backbone.tokenizer,
                                     fewshot.describe(self.dataset, self.label_names),
                                     self.max_length)


def frozen_embeddings(backbone: Backbone, data: EncodedText,
                      cache: dict[str, np.ndarray] | None, batch_size: int = 64,
                      progress: ProgressDisplay | None = None) -> np.ndarray:
    """The pristine encoder's embeddings of `data`, memoised in `cache` under a key of the
    weights and the token ids (other seeds, sizes and strategies reuse them). A cache miss
    is announced on `progress`."""
    h = hashlib.sha1(backbone.digest().encode())
    for ids in data.ids:
        h.update(ids.tobytes() + b"|")
    key = h.hexdigest()
    if cache is not None and key in cache:
        return cache[key]
    progress = progress or ProgressDisplay(enabled=False)
    with progress.phase(f"encoding {len(data):,} sentences with the frozen encoder"):
        emb = embed_texts(backbone.encoder, data, batch_size)
    if cache is not None:
        cache[key] = emb
    return emb


def build_model(strategy: str, backbone: Backbone, num_labels: int, cfg: RecipeConfig,
                encoder: Bert | None = None) -> SentenceClassifier:
    """A classifier on a copy of the encoder (or on `encoder`), adapted as `strategy`
    wants. The head starts random here; `fit` sets it to zero-shot."""
    if strategy not in STRATEGIES or strategy in ("auto", "bow", "self-train", "intermediate"):
        raise ValueError(f"unknown strategy {strategy!r} for build_model; choose from "
                         f"{', '.join(s for s in STRATEGIES if s not in ('auto', 'bow'))}")
    manual_seed(cfg.seed)
    if encoder is None:
        encoder = (Bert(backbone.encoder.config, add_pooling_layer=False)
                   if strategy == "scratch" else copy.deepcopy(backbone.encoder))
    model = SentenceClassifier(encoder, num_labels, encoder.config.hidden_dropout_prob)
    if strategy in ("lora", "setfit-lora"):
        tl.apply_lora(model, tl.LoRAConfig(r=cfg.lora_r, alpha=cfg.lora_alpha,
                                           modules_to_save=("classifier",)))
    elif strategy == "adapter":
        tl.apply_adapters(model, bottleneck=cfg.adapter_bottleneck, placement="houlsby",
                          modules_to_save=("classifier",))
    elif strategy == "prompt":
        tl.apply_prompt_tuning(model, n_tokens=cfg.prompt_tokens,
                               modules_to_save=("classifier",), seed=cfg.seed)
    model.train()
    return model


def fit(strategy: str, backbone: Backbone, train: EncodedText, cfg: RecipeConfig | None = None,
        *, dataset: str, label_names: Sequence[str], unlabeled: Sequence[str] = (),
        max_length: int | None = None, cache: dict[str, np.ndarray] | None = None,
        replay: SourceReplay | None = None, ewc_pairs: Sequence[tuple[str, str]] = (),
        head_from: SentenceClassifier | None = None, stream: Any = None) -> Fitted:
    """Train `strategy` on the labelled sentences `train` (and, for self-train, the
    `unlabeled` texts). Takes no eval data: every choice in here (steps, selection,
    pseudo-labels) is made on the labelled set. `head_from` starts the head from that
    model's head instead of the zero-shot classifier (sequential transfer)."""
    cfg = cfg or RecipeConfig()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    ctx = _Context(backbone, cfg, dataset, tuple(label_names),
                   max_length or max((len(x) for x in train.ids), default=32), cache, stream,
                   [], head_from)
    details: dict[str, Any] = {}
    if strategy == "auto":
        choice = plans.choose(len(train), len(unlabeled))
        details["choice"] = {"strategy": choice.strategy, "reason": choice.reason}
        strategy = choice.strategy
    if len(train) == 0 and strategy != "zero-shot":
        raise ValueError(f"strategy {strategy!r} needs labelled sentences (0 given); "
                         "zero-shot needs none")
    if strategy == "bow":
        bow = BowClassifier(BowConfig(seed=cfg.seed)).fit(train.texts, train.labels,
                                                           len(label_names))
        assert bow.linear is not None
        n = sum(p.numel() for p in bow.linear.parameters())
        return Fitted("bow", None, bow, steps=bow.config.steps, trainable=n, total=n,
                      details={**details, "vocabulary": n // len(label_names) - 1})
    if strategy in FROZEN:
        out = _fit_frozen(strategy, ctx, train)
    elif strategy in ("setfit", "setfit-lora"):
        out = _fit_setfit(strategy, ctx, train)
    elif strategy == "self-train":
        out = _fit_self_train(ctx, train, unlabeled)
    elif strategy == "intermediate":
        out = _fit_intermediate(ctx, train)
    else:
        out = _fit_encoder(strategy, ctx, train, replay=replay, ewc_pairs=ewc_pairs)
    out.details = {**details, **out.details, "max_length": ctx.max_length}
    out.step_times = ctx.step_times
    return out


def _fit_frozen(strategy: str, ctx: _Context, train: EncodedText) -> Fitted:
    cfg = ctx.cfg
    model = SentenceClassifier(ctx.backbone.encoder, len(ctx.label_names))  # shared, frozen
    head_params = sum(p.numel() for p in model.classifier.parameters())
    total = head_params + sum(p.numel() for p in ctx.backbone.encoder.parameters())
    if strategy == "zero-shot":
        fewshot.init_head(model.classifier, ctx.zero_shot_vectors())
        return Fitted(strategy, model, frozen=True, trainable=0, total=total)
    emb = ctx.frozen_embeddings(train)
    if strategy == "prototype":
        fewshot.init_head(model.classifier, fewshot.prototypes(emb, train.labels,
                                                               len(ctx.label_names)))
        return Fitted(strategy, model, frozen=True, trainable=0, total=total)
    _init_head(model, ctx)
    steps = cfg.steps or head_steps(len(train), cfg.batch_size)
    lr = cfg.lr or plans.HYPER["head"]
    train_head(model.classifier, emb, train.labels, steps=steps, lr=lr,
               prior=cfg.head_prior if cfg.head_init == "zero-shot" else 0.0,
               batch_size=cfg.batch_size, seed=cfg.seed)
    return Fitted(strategy, model, frozen=True, steps=steps, trainable=head_params,
                  total=total, details={"plan": {"steps": steps, "lr": lr}})


def _init_head(model: SentenceClassifier, ctx: _Context, encoder: nn.Module | None = None
               ) -> None:
    if ctx.head_from is not None:
        model.classifier.load_state_dict(ctx.head_from.classifier.state_dict())
    elif ctx.cfg.head_init == "zero-shot":
        fewshot.init_head(model.classifier, ctx.zero_shot_vectors(encoder))


def _schedule(strategy: str, ctx: _Context, n: int) -> tuple[Schedule, int]:
    cfg = ctx.cfg
    p = plans.plan(strategy, n, cfg.batch_size)
    steps = cfg.steps or p.steps
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    return Schedule(steps, cfg.lr or p.lr, cfg.head_lr or p.head_lr, cfg.batch_size,
                    cfg.warmup, cfg.weight_decay, cfg.seed, cfg.progress,
                    ctx.stream, cfg.log_dir), (0 if not cfg.select else
                                  p.holdout if cfg.holdout is None else cfg.holdout)


def _fit_encoder(strategy: str, ctx: _Context, train: EncodedText, *,
                 replay: SourceReplay | None = None,
                 ewc_pairs: Sequence[tuple[str, str]] = ()) -> Fitted:
    cfg = ctx.cfg
    model = build_model(strategy, ctx.backbone, len(ctx.label_names), cfg)
    if strategy != "scratch":
        _init_head(model, ctx)
    sched, n_hold = _schedule(strategy, ctx, len(train))
    selection = None
    if n_hold:
        train, holdout = split_holdout(train, n_hold, cfg.seed)
        selection = Selection(holdout)
    wrap: Callable[[Any], Any] | None = None
    extra: dict[str, Any] = {}
    if cfg.replay > 0:
        if replay is None:
            raise ValueError("replay needs source lines (a SourceReplay)")
        wrap = replay.buffer(cfg.replay, cfg.seed).wrap
        extra.update(teacher=replay.teacher, distill_weight=cfg.distill_weight)
    if cfg.ewc > 0:
        if not ewc_pairs:
            raise ValueError("ewc needs source dialogue pairs (ewc_pairs)")
        extra["penalty"] = make_ewc(model, ctx.backbone.tokenizer, ewc_pairs, cfg.ewc,
                                    max_length=ctx.max_length).penalty
    steps = train_classifier(strategy, model, train, sched, selection=selection,
                             unfreeze_stages=cfg.unfreeze_stages, lr_decay=cfg.lr_decay,
                             loader_wrap=wrap, trainer_extra=extra,
                             on_step=ctx.step_times.append)
    trainable, total = tl.count_parameters(model)
    details: dict[str, Any] = {"plan": {"steps": sched.steps, "lr": sched.lr,
                                        "head_lr": sched.head_lr, "holdout": n_hold}}
    if selection is not None:
        details["selection"] = {"best_step": selection.best_step, "scores": selection.scores}
    return Fitted(strategy, model, steps=steps, trainable=trainable, total=total,
                  details=details)


def _fit_setfit(strategy: str, ctx: _Context, train: EncodedText) -> Fitted:
    """SetFit (arXiv:2209.11055): contrastive pairs tune the encoder, then a head is fitted
    on its embeddings (here from the tuned encoder's zero-shot head, with the prior)."""
    cfg = ctx.cfg
    model = build_model(strategy, ctx.backbone, len(ctx.label_names), cfg)
    per = cfg.pairs_per_example or fewshot.pairs_per_example(len(train))
    pairs = fewshot.make_pairs(train.labels, per, cfg.seed)
    sched, _ = _schedule(strategy, ctx, len(train))
    steps = train_pairs(model, train, pairs, sched, on_step=ctx.step_times.append)
    _init_head(model, ctx, model)
    emb = embed_texts(model, train, cfg.eval_batch_size)
    h_steps = head_steps(len(train), cfg.batch_size)
    train_head(model.classifier, emb, train.labels, steps=h_steps, lr=plans.HYPER["head"],
               prior=cfg.head_prior if cfg.head_init == "zero-shot" else 0.0,
               batch_size=cfg.batch_size, seed=cfg.seed)
    trainable, total = tl.count_parameters(model)
    return Fitted(strategy, model, steps=steps + h_steps, trainable=trainable, total=total,
                  details={"pairs": len(pairs), "pairs_per_example": per,
                           "plan": {"pair_steps": steps, "lr": sched.lr, "head_steps": h_steps}})


def _fit_self_train(ctx: _Context, train: EncodedText, unlabeled: Sequence[str]) -> Fitted:
    """Self-training: a teacher (full fine-tuning) labels a pool of unlabeled sentences;
    the most confident `pseudo_share` of the pool, the same number per class, joins the
    labelled set for a student trained afresh from the pristine encoder."""
    cfg = ctx.cfg
    if not unlabeled:
        raise ValueError("self-train needs unlabeled sentences (--unlabeled)")
    teacher = _fit_encoder("full", ctx, train)
    rng = np.random.default_rng(cfg.seed)
    pool_n = min(len(unlabeled), cfg.unlabeled_per_label * len(train))
    pool_texts = [unlabeled[i] for i in rng.choice(len(unlabeled), pool_n, replace=False)]
    pool = encode_texts(ctx.backbone.tokenizer, pool_texts, np.zeros(pool_n), ctx.max_length)
    assert teacher.model is not None
    prob = np.exp(log_probabilities(predict_logits(teacher.model, pool, cfg.eval_batch_size)))
    pred, conf = prob.argmax(1), prob.max(1)
    c = len(ctx.label_names)
    per_class = int(cfg.pseudo_share * pool_n / c)
    keep = np.concatenate([np.flatnonzero(pred == k)[np.argsort(-conf[pred == k])][:per_class]
                           for k in range(c)])
    del teacher
    pseudo = EncodedText([pool.ids[i] for i in keep], pred[keep],
                         [pool_texts[i] for i in keep])
    both = EncodedText(train.ids + pseudo.ids,
                       np.concatenate([train.labels, pseudo.labels]), train.texts + pseudo.texts)
    student = _fit_encoder("full", ctx, both)
    student.strategy = "self-train"
    student.details.update(pool=pool_n, pseudo=len(keep),
                           pseudo_min_confidence=float(conf[keep].min()) if len(keep) else None)
    return student


def _fit_intermediate(ctx: _Context, train: EncodedText) -> Fitted:
    """Full fine-tuning from the intermediate encoder, its head (a classifier of the same
    labels) as the start of ours."""
    from minitl.recipes.intermediate import intermediate_model, related_sentiment_sets

    sets = related_sentiment_sets(ctx.dataset)
    inter = intermediate_model(ctx.backbone, sets, ctx.max_length)
    sub = dataclasses.replace(ctx, backbone=inter.backbone, head_from=inter.model)
    out = _fit_encoder("full", sub, train)
    out.strategy = "intermediate"
    out.details.update(intermediate={"datasets": list(sets), "labels": inter.n_labels,
                                     "steps": inter.steps})
    return out


def score(fitted: Fitted, backbone: Backbone, data: EncodedText,
          cache: dict[str, np.ndarray] | None = None, batch_size: int = 64,
          progress: ProgressDisplay | None = None, split: str = "") -> dict[str, float]:
    """Accuracy and macro-F1 of a fitted strategy on `data` (announced on `progress`)."""
    progress = progress or ProgressDisplay(enabled=False)
    with progress.phase(f"scoring {len(data):,} {split + ' ' if split else ''}sentences"):
        if fitted.bow is not None:
            return metrics(fitted.bow.predict_proba(data.texts), data.labels)
        assert fitted.model is not None
        emb = frozen_embeddings(backbone, data, cache, batch_size) if fitted.frozen else None
        return metrics(predict_logits(fitted.model, data, batch_size, emb), data.labels)


@dataclass
class RunResult:
    strategy: str  # as asked (auto stays auto; `chosen` says what ran)
    accuracy: float
    macro_f1: float
    trainable: int  # parameters that trained (at the end, for gradual unfreezing)
    total: int  # parameters of the fine-tuned model, head and adapters included
    seconds: float  # fit wall time (for frozen strategies: embedding + head training)
    cpu_seconds: float  # CPU time of the process over the same span, all threads
    eval_seconds: float
    steps: int  # optimizer steps
    eval_split: str = "validation"
    chosen: str = ""
    source: dict[str, float] = field(default_factory=dict)  # source metrics after
    ledger: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trainable_pct": self.trainable_pct}


def run_strategy(strategy: str, backbone: Backbone, task: Task,
                 cfg: RecipeConfig | None = None, *, probe: SourceProbe | None = None,
                 replay: SourceReplay | None = None,
                 ewc_pairs: Sequence[tuple[str, str]] = (),
                 feature_cache: dict[str, np.ndarray] | None = None,
                 head_from: SentenceClassifier | None = None,
                 stream: Any = None) -> tuple[Fitted, RunResult]:
    """`fit` on task.train (and task.unlabeled), `score` on task.eval, and a forgetting
    ledger: the source metrics (`probe`) of the pristine and of the fine-tuned encoder."""
    cfg = cfg or RecipeConfig()
    def no_source(model: Any) -> dict[str, float]:
        return {}

    ledger = tl.ForgettingLedger(probe or no_source, no_source, memory="rss")
    ledger.record("before", 0, model=backbone.encoder)
    t0, cpu0 = time.perf_counter(), time.process_time()
    fitted = fit(strategy, backbone, task.train, cfg, dataset=task.name,
                 label_names=task.label_names, unlabeled=task.unlabeled,
                 max_length=task.max_length, cache=feature_cache, replay=replay,
                 ewc_pairs=ewc_pairs, head_from=head_from, stream=stream)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for t in fitted.step_times:
        ledger.add_step_time(t)
    t1 = time.perf_counter()
    result = score(fitted, backbone, task.eval, feature_cache, cfg.eval_batch_size,
                   ProgressDisplay(stream=stream, enabled=cfg.progress), task.eval_split)
    eval_s = time.perf_counter() - t1
    ledger.target_eval = lambda m: result
    with_source = fitted.model is not None and fitted.strategy != "scratch"
    row = ledger.record("after", fitted.steps,
                        model=fitted.model if with_source else backbone.encoder)
    ledger.close()
    if not with_source:
        row["source"] = {}
    return fitted, RunResult(
        strategy, result["accuracy"], result["macro_f1"], fitted.trainable, fitted.total,
        seconds, cpu, eval_s, fitted.steps, task.eval_split, fitted.strategy,
        row["source"], ledger.to_dict(),
        {**asdict(cfg), **fitted.details, "n_train": len(task.train),
         "n_unlabeled": len(task.unlabeled), "n_eval": len(task.eval),
         "backbone": backbone.name, "task": task.name})
