"""Pretraining recipes: data, tokenizer, model, objective and Trainer for each model family.

- gpt-*: causal LM on windows of seq_len + 1 tokens (byte-level BPE or characters),
  judged against the train unigram distribution's perplexity on the same targets.
- bert-*: masked LM (arXiv:1810.04805, 3.1) on lines packed as `[CLS] line [SEP] line
  [SEP] ...` (RoBERTa's full sentences, arXiv:1907.11692), the decoder run on the masked
  positions only; WordPiece or BPE; judged against chance and the most frequent token.
- resnet-*: supervised, or contrastive (SimCLR, arXiv:2002.05709) judged by k-NN accuracy.

`RoundLoader` serves shuffled epochs in rounds of `eval_every` steps: the Trainer evaluates
after each round (its "epoch"), and the data order is a function of (seed, step) alone, so
resuming is exact. `pretrain` writes the weights (`run/gpt.safetensors`), `run/gpt.config.json`
and the tokenizer (`run/gpt.tokenizer.json`, WordPiece `run/gpt.vocab.txt`);
`load_pretrained` reads them back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minitl import creation, io, nn
from minitl.autograd_state import no_grad
from minitl.data import BasicTokenizer, ByteBPETokenizer, CharTokenizer, WordPieceTokenizer
from minitl.data.augment import ImageAugment
from minitl.data.tokenizers.bpe import bytes_to_unicode
from minitl.models import GPT, BertForMaskedLM, GPTConfig, ResNet
from minitl.optim import SGD, AdamW, lr_scheduler
from minitl.pretrain.objectives import (
    Objective,
    ObjectiveTrainer,
    SimCLR,
    causal_lm_objective,
    contrastive_objective,
    mask_tokens,
    masked_lm_objective,
    supervised_objective,
)
from minitl.recipes.pretrain_config import (
    FAMILIES,
    ConfigError,
    PretrainConfig,
    check_paths,
    model_family,
)
from minitl.tensor import Tensor
from minitl.train import Checkpoint, Trainer

__all__ = ["ConfigError", "ObjectiveTrainer", "PreparedRun", "PretrainConfig", "PretrainResult",
           "RoundLoader", "TextCodec", "knn_accuracy", "load_pretrained", "model_family",
           "prepare", "pretrain", "train_wordpiece", "unigram_perplexity"]

MODELS: dict[str, Any] = {"gpt": GPT, "bert": BertForMaskedLM, "resnet": ResNet}
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4
_NEVER = 1 << 62  # a Checkpoint interval that never fires (see `_build_trainer`)


@dataclass
class PretrainResult:
    model: nn.Module  # the pretrained network (contrastive resnet: the backbone)
    tokenizer: Any  # None for images
    metrics: dict[str, float]  # final validation (and test) metrics
    baselines: dict[str, float]
    paths: dict[str, str]  # weights, config, tokenizer
    steps: int
    train_seconds: float
    trainer: Trainer


# ---- tokenizers -----------------------------------------------------------------------------

def train_wordpiece(text: str, vocab_size: int, min_frequency: int = 2) -> WordPieceTokenizer:
    """A lower-cased WordPiece vocabulary learnt on `text`: byte-level BPE on BERT's basic
    words, each with a space in front, so a piece starting with the space begins a word and
    any other continues one (`##piece`). Vocabulary: the specials, every corpus character
    in both forms (no corpus word is [UNK]), then pieces in merge order, up to vocab_size."""
    basic = BasicTokenizer(do_lower_case=True)
    words: Counter[str] = Counter()
    for chunk, n in Counter(text.split()).items():  # each distinct chunk tokenized once
        for w in basic.tokenize(chunk):
            words[w] += n
    chars = sorted({c for w in words for c in w})
    pieces = dict.fromkeys([*BERT_SPECIALS, *chars, *("##" + c for c in chars)])  # ordered set
    bpe = ByteBPETokenizer.train((f" {w}" * n for w, n in words.items()),
                                 256 + max(0, vocab_size - len(pieces)),
                                 min_frequency=min_frequency, special_tokens=())
    byte_of = {c: b for b, c in bytes_to_unicode().items()}  # token string -> bytes
    for a, b in bpe.merges:
        if len(pieces) >= vocab_size:
            break
        try:
            s = bytes(byte_of[c] for c in a + b).decode("utf-8")
        except UnicodeDecodeError:  # a piece cut inside a multi-byte character
            continue
        piece = s[1:] if s.startswith(" ") else "##" + s
        if piece and " " not in piece:
            pieces.setdefault(piece)
    return WordPieceTokenizer({p: i for i, p in enumerate(pieces)}, do_lower_case=True)


@dataclass
class TextCodec:
    """A tokenizer of any kind behind the few calls pretraining makes."""

    kind: str  # "bpe" | "char" | "wordpiece"
    tokenizer: Any

    @classmethod
    def train(cls, kind: str, text: str, vocab_size: int, family: str) -> TextCodec:
        specials = BERT_SPECIALS if family == "bert" else ("<|endoftext|>",)
        return cls(kind, CharTokenizer.train(text) if kind == "char" else
                   train_wordpiece(text, vocab_size) if kind == "wordpiece" else
                   ByteBPETokenizer.train(text, vocab_size, special_tokens=specials))

    @classmethod
    def load(cls, kind: str, path: str | os.PathLike[str]) -> TextCodec:
        try:
            return cls(kind, WordPieceTokenizer.from_vocab(path, do_lower_case=True)
                       if kind == "wordpiece" else
                       (CharTokenizer if kind == "char" else ByteBPETokenizer).load(path))
        except (ValueError, KeyError, TypeError) as e:  # JSON of another shape, or none
            raise ValueError(f"{os.fspath(path)}: not a saved {kind} tokenizer "
                             f"({type(e).__name__}: {e})") from e

    def save(self, stem: str) -> str:
        if self.kind != "wordpiece":
            self.tokenizer.save(stem + ".tokenizer.json")
            return stem + ".tokenizer.json"
        by_id = sorted(self.tokenizer.vocab.items(), key=lambda kv: kv[1])
        Path(stem + ".vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), "utf-8")
        return stem + ".vocab.txt"

    def token_id(self, token: str) -> int:
        i = (self.tokenizer.vocab.get(token) if self.kind == "wordpiece"
             else self.tokenizer.token_to_id(token))  # bpe; char has no [SEP] etc.
        if i is None:
            raise ValueError(f"the {self.kind} tokenizer has no {token} token")
        return int(i)

    def encode(self, text: str) -> list[int]:
        tok = self.tokenizer
        return list(tok.convert_tokens_to_ids(tok.tokenize(text)) if self.kind == "wordpiece"
                    else tok.encode(text, add_special_tokens=False) if self.kind == "char"
                    else tok.encode(text))

    def stream(self, text: str, sep: int | None) -> np.ndarray:
        """Token ids of the whole text; with `sep`, line by line with `sep` after each."""
        if sep is None:
            return np.asarray(self.encode(text), dtype=np.int64)
        return np.asarray([i for line in text.splitlines() if line.strip()
                           for i in [*self.encode(line), sep]], dtype=np.int64)


# ---- data -----------------------------------------------------------------------------------

def load_text(data: str, seed: int, root: str | None = None) -> tuple[str, str]:
    """(train text, validation text) of a corpus name or a text file (last 10% of lines)."""
    from minitl.data import list_datasets, load_dataset

    if data not in list_datasets():
        if not Path(data).is_file():
            raise FileNotFoundError(f"{data!r} is neither a dataset name "
                                    f"({', '.join(list_datasets())}) nor a file")
        try:
            lines = Path(data).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{data}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        cut = len(lines) - max(1, len(lines) // 10)
        return "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:]) + "\n"
    splits = load_dataset(data, seed=seed, root=root)
    if isinstance(splits["train"], str):
        return splits["train"], splits["validation"]
    raise ValueError(f"{data} is not a text corpus (movie-dialog is, or a text file)")


def unigram_perplexity(counts: np.ndarray, targets: np.ndarray) -> float:
    """exp of the cross entropy of the train unigram distribution on `targets`: the
    perplexity of a model that ignores the context. Add-one smoothing keeps a token unseen
    in training from scoring p = 0."""
    p = (counts + 1.0) / (counts.sum() + len(counts))
    return float(np.exp(-np.log(p[targets]).mean()))


def windows(stream: np.ndarray, length: int, prefix: int | None = None) -> np.ndarray:
    """Non-overlapping windows (N, length) of a stream, each led by `prefix` if given."""
    body = length - (prefix is not None)
    n = len(stream) // body
    out = stream[:n * body].reshape(n, body)
    if prefix is not None:
        out = np.concatenate([np.full((n, 1), prefix, dtype=out.dtype), out], axis=1)
    return out


def spread(n: int, k: int | None) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when k is None or >= n)."""
    return np.arange(n) if k is None or k >= n else np.linspace(0, n - 1, k).astype(np.int64)


class RoundLoader:
    """Batches of `batch_size` indices into `n` examples: epoch after epoch, each shuffled
    by (seed, epoch) and cut into whole batches, served `steps_per_round` at a time. The
    Trainer's epoch r is batches r*R .. (r+1)*R - 1 of that stream, so the order depends on
    nothing but the seed and the step. `fetch(indices)` builds the batch."""

    def __init__(self, n: int, batch_size: int, fetch: Callable[[np.ndarray], Any],
                 steps_per_round: int, seed: int = 0) -> None:
        if n < batch_size:
            raise ValueError(f"{n} training examples are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.fetch, self.seed = n, batch_size, fetch, seed
        self.steps_per_round, self.batches_per_epoch = steps_per_round, n // batch_size
        self.epoch = 0  # the round served next
        self._perm_epoch, self._perm = -1, np.arange(n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:  # optimizer steps per Trainer epoch
        return self.steps_per_round

    def indices(self, g: int) -> np.ndarray:  # the examples of global batch g
        epoch, j = divmod(g, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm[j * self.batch_size:(j + 1) * self.batch_size]

    def __iter__(self) -> Iterator[Any]:
        r, k = self.epoch, self.steps_per_round
        self.epoch += 1
        return (self.fetch(self.indices(g)) for g in range(r * k, (r + 1) * k))

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "batch_size": self.batch_size, "round": self.steps_per_round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state != self.state_dict():
            raise ValueError(f"the checkpoint's data stream was {state}, this run's is "
                             f"{self.state_dict()}: the batches would differ (same data, "
                             "--batch-size and --eval-every are needed to resume)")


# ---- setup per family -----------------------------------------------------------------------

@dataclass
class _Setup:
    model: nn.Module  # what the Trainer optimises
    saved: nn.Module  # what is written to `out`
    objective: Objective
    fetch: Callable[[np.ndarray], Any]  # training batch of these example indices
    n_train: int
    eval_batches: list[Any]
    metrics: list[str]
    baselines: dict[str, float]
    codec: TextCodec | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # goes into config.json
    final: Callable[[Trainer], dict[str, float]] | None = None  # more metrics at the end


def _model(cfg: PretrainConfig, **fixed: Any) -> Any:
    family = model_family(cfg.model)
    return MODELS[family](FAMILIES[family].named(cfg.model, **{**fixed, **cfg.overrides}))


def _text_setup(cfg: PretrainConfig, family: str, say: Callable[[str], None]) -> _Setup:
    train_text, val_text = load_text(str(cfg.data), cfg.seed, cfg.data_root)
    train_text = train_text[:cfg.train_limit]
    t0 = time.perf_counter()
    kind, bs, T = str(cfg.tokenizer), int(cfg.batch_size or 1), int(cfg.seq_len or 1)
    codec = (TextCodec.load(kind, cfg.tokenizer_file) if cfg.tokenizer_file
             else TextCodec.train(kind, train_text, int(cfg.vocab_size or 0), family))
    sep = codec.token_id("[SEP]") if family == "bert" or kind == "wordpiece" else None
    train_ids, val_ids = codec.stream(train_text, sep), codec.stream(val_text, sep)
    V = int(codec.tokenizer.vocab_size)
    say(f"tokenizer {kind}: {V} tokens, {len(train_ids):,} train / {len(val_ids):,} "
        f"validation tokens ({len(train_text) / max(len(train_ids), 1):.2f} chars/token, "
        f"{time.perf_counter() - t0:.1f} s)")
    counts = np.bincount(train_ids, minlength=V).astype(np.float64)
    n_eval = None if cfg.eval_batches is None else cfg.eval_batches * bs
    if family == "gpt":
        train_w, val_w = windows(train_ids, T + 1), windows(val_ids, T + 1)
        val_w = val_w[spread(len(val_w), n_eval)]
        model = _model(cfg, vocab_size=V, block_size=max(T, GPTConfig.named(cfg.model).block_size))
        return _Setup(model, model, causal_lm_objective, lambda idx: train_w[idx], len(train_w),
                      [val_w[i:i + bs] for i in range(0, len(val_w), bs)], ["perplexity"],
                      {"unigram_perplexity": unigram_perplexity(counts, val_w[:, 1:])}, codec)
    pad, cls, mask = (codec.token_id(t) for t in ("[PAD]", "[CLS]", "[MASK]"))
    specials = [codec.token_id(t) for t in BERT_SPECIALS]
    train_b, val_b = windows(train_ids, T, prefix=cls), windows(val_ids, T, prefix=cls)
    val_b = val_b[spread(len(val_b), n_eval)]

    def masked(ids: np.ndarray, rng: Any = None) -> dict[str, np.ndarray]:
        inputs, labels = mask_tokens(ids, mask, V, special_ids=specials, pad_id=pad, rng=rng)
        if (labels == -100).all():  # a tiny batch can come out without a masked position
            labels[0, 1], inputs[0, 1] = ids[0, 1], mask
        return {"input_ids": inputs, "labels": labels}

    rng = np.random.default_rng([cfg.seed, 1])  # validation masks: drawn once, kept
    val_batches = [masked(val_b[i:i + bs], rng) for i in range(0, len(val_b), bs)]
    counts[specials] = 0
    scored = np.concatenate([b["labels"][b["labels"] != -100] for b in val_batches])
    model = _model(cfg, vocab_size=V, pad_token_id=pad, max_position_embeddings=max(T, 512))
    return _Setup(model, model, masked_lm_objective, lambda idx: masked(train_b[idx]),
                  len(train_b), val_batches, ["accuracy"],
                  {"chance_accuracy": 1.0 / (V - len(specials)),
                   "most_frequent_token_accuracy": float((scored == counts.argmax()).mean())},
                  codec)


def _image_setup(cfg: PretrainConfig, say: Callable[[str], None]) -> _Setup:
    from minitl.data import load_dataset

    splits = load_dataset(str(cfg.data), seed=cfg.seed, root=cfg.data_root)
    if not hasattr(splits["train"], "images"):
        raise ValueError(f"{cfg.data} is not an image dataset; resnet models need images")
    train, val, test = splits["train"], splits["validation"], splits["test"]
    x_tr, y_tr = train.images[:cfg.train_limit], train.labels[:cfg.train_limit]
    mean, std = float(x_tr.mean()), float(x_tr.std())  # normalise with train statistics
    x_tr, x_va, x_te = (((x - mean) / std).astype(np.float32)
                        for x in (x_tr, val.images, test.images))
    bs, n_cls = int(cfg.batch_size or 1), len(train.label_names)
    keep = spread(len(x_va), None if cfg.eval_batches is None else cfg.eval_batches * bs)
    x_va, y_va = x_va[keep], val.labels[keep]
    say(f"images: {len(x_tr):,} train / {len(x_va):,} validation / {len(x_te):,} test, "
        f"{'x'.join(map(str, x_tr.shape[1:]))}, {n_cls} classes")
    net = _model(cfg, in_channels=x_tr.shape[1], num_classes=n_cls)
    extra = {"normalize": {"mean": mean, "std": std}, "label_names": list(train.label_names)}
    base = {"chance_accuracy": 1.0 / n_cls,
            "majority_test_accuracy": float(np.bincount(test.labels).max() / len(test))}
    val_b = [(Tensor(x_va[i:i + bs]), Tensor(y_va[i:i + bs])) for i in range(0, len(x_va), bs)]
    if cfg.objective == "contrastive":
        augment = ImageAugment(crop_padding=3, flip=True, noise_std=0.1, erase_p=0.5)
        ref = spread(len(x_tr), 10_000)  # the labelled neighbours of the k-NN judge

        def knn(_: Trainer) -> dict[str, float]:
            return {f"{n}_knn_accuracy": knn_accuracy(net, x_tr[ref], y_tr[ref], x, y)
                    for n, x, y in (("eval", x_va, y_va), ("test", x_te, test.labels))}

        return _Setup(SimCLR(net), net, contrastive_objective(augment),
                      lambda idx: (Tensor(x_tr[idx]), Tensor(y_tr[idx])), len(x_tr), val_b, [],
                      base, None, extra, knn)
    test_b = [(Tensor(x_te[i:i + bs]), Tensor(test.labels[i:i + bs]))
              for i in range(0, len(x_te), bs)]

    def test_metrics(trainer: Trainer) -> dict[str, float]:
        return {"test" + k[4:]: v for k, v in trainer.evaluate(test_b).items()}

    return _Setup(net, net, supervised_objective,
                  lambda idx: (Tensor(x_tr[idx]), Tensor(y_tr[idx])), len(x_tr), val_b,
                  ["accuracy"], base, None, extra, test_metrics)


def knn_accuracy(net: ResNet, ref_x: np.ndarray, ref_y: np.ndarray, x: np.ndarray,
                 y: np.ndarray, k: int = 20) -> float:
    """Accuracy of a cosine k-nearest-neighbour vote (weights exp(sim / 0.1), as in
    arXiv:1805.01978) on frozen features: how well features learnt without labels
    separate the classes."""
    was = net.training
    net.eval()
    with no_grad():
        ref, z = (np.concatenate([net.features(Tensor(a[i:i + 256])).numpy()
                                  for i in range(0, len(a), 256)]) for a in (ref_x, x))
    net.train(was)
    ref, z = (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12) for a in (ref, z))
    votes = np.zeros((len(z), int(ref_y.max()) + 1))
    for i in range(0, len(z), 1000):  # (1000, N) similarities at a time
        sim = z[i:i + 1000] @ ref.T
        top = np.argpartition(-sim, k, axis=1)[:, :k]  # (1000, k)
        np.add.at(votes[i:i + 1000], (np.arange(len(sim))[:, None], ref_y[top]),
                  np.exp(np.take_along_axis(sim, top, 1) / 0.1))
    return float((votes.argmax(1) == y).mean())


# ---- the run --------------------------------------------------------------------------------

@dataclass
class PreparedRun:
    """Everything `pretrain` builds before the first step: what `prepare` returns."""

    cfg: PretrainConfig  # resolved
    setup: _Setup
    trainer: Trainer  # already at the checkpoint's step when resuming
    say: Callable[[str], None]

    def train(self) -> PretrainResult:
        """Train (or continue), evaluate, save; return the lot."""
        cfg, setup, trainer = self.cfg, self.setup, self.trainer
        t0 = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - t0
        last = trainer.eval_history[-1] if trainer.eval_history else {}
        metrics = ({k: v for k, v in last.items() if k.startswith("eval_")}
                   if last.get("step") == trainer.step else trainer.evaluate())
        metrics.update(setup.final(trainer) if setup.final is not None else {})
        paths = save_pretrained(cfg, setup, metrics, trainer.step, seconds)
        return PretrainResult(setup.saved, None if setup.codec is None else setup.codec.tokenizer,
                              metrics, setup.baselines, paths, trainer.step, seconds, trainer)


def pretrain(cfg: PretrainConfig, stream: TextIO | None = None) -> PretrainResult:
    """Build everything `cfg` describes, train (or resume), evaluate, save; return the lot.
    Lines about the run go to `stream` (stdout by default), the Trainer's progress to
    stderr. Bad settings raise ConfigError before any data is read (see `prepare`)."""
    return prepare(cfg, stream).train()


def prepare(cfg: PretrainConfig, stream: TextIO | None = None) -> PreparedRun:
    """Check the settings and paths (ConfigError), read the data, learn or load the
    tokenizer, build the model and the Trainer, and load the checkpoint to resume from
    (ValueError naming the file if it is not a fitting one); nothing is trained yet."""
    cfg = cfg.resolved()
    check_paths(cfg)
    say = functools.partial(print, file=stream if stream is not None else sys.stdout, flush=True)
    family = model_family(cfg.model)
    creation.manual_seed(cfg.seed)  # model init, masks, dropout, augmentations
    setup = _text_setup(cfg, family, say) if family != "resnet" else _image_setup(cfg, say)
    bs = int(cfg.batch_size or 1)
    _check_data_size(cfg, family, setup, bs)
    per_epoch = setup.n_train // bs
    steps = cfg.steps or max(1, math.ceil((cfg.epochs or 1) * per_epoch))
    eval_every = min(cfg.eval_every or per_epoch, steps)
    say(f"{cfg.model} ({cfg.objective}): {sum(p.numel() for p in setup.saved.parameters()):,} "
        f"parameters; {steps} steps of {bs} ({steps * bs / setup.n_train:.2f} epochs of "
        f"{setup.n_train:,}), evaluation every {eval_every} steps on "
        f"{len(setup.eval_batches)} validation batches")
    trainer = _build_trainer(cfg, setup, steps, eval_every)
    if cfg.resume:
        trainer.load_checkpoint(cfg.resume)
        _check_resumed_settings(cfg, trainer)
    return PreparedRun(cfg, setup, trainer, say)


def _check_data_size(cfg: PretrainConfig, family: str, setup: _Setup, bs: int) -> None:
    """ConfigError unless the data gives one training batch and one validation batch."""
    unit = ("images" if family == "resnet" else
            f"windows of {int(cfg.seq_len or 0) + (family == 'gpt')} tokens")
    limit = f" (--train-limit {cfg.train_limit})" if cfg.train_limit is not None else ""
    if setup.n_train < bs:
        raise ConfigError(f"the training data{limit} gives {setup.n_train} {unit}, fewer than "
                          f"one batch of {bs}: use more data or a smaller --batch-size" +
                          (" or --seq-len" if family != "resnet" else ""))
    if not setup.eval_batches:
        raise ConfigError(f"the validation data gives no {unit}" +
                          (": use more data or a smaller --seq-len" if family != "resnet"
                           else ""))


def _check_resumed_settings(cfg: PretrainConfig, trainer: Trainer) -> None:
    """The optimizer state restored from a checkpoint brings its own peak lr and weight
    decay; a resume asking for others would silently get the saved ones, so it is refused."""
    saved = {"lr": float(getattr(trainer.scheduler, "base_lrs", [cfg.lr])[0]),
             "weight_decay": float(trainer.optimizer.param_groups[0]["weight_decay"])}
    for name, value in saved.items():
        asked = float(getattr(cfg, name) or 0.0)
        if not math.isclose(asked, value, rel_tol=1e-9, abs_tol=0.0):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {asked:g} differs from the {value:g} that checkpoint "
                              f"{cfg.resume} was trained with; a resumed run continues the "
                              f"saved optimizer: resume with {flag} {value:g}, or start a new "
                              "run")


def _build_trainer(cfg: PretrainConfig, setup: _Setup, steps: int, eval_every: int) -> Trainer:
    """AdamW (betas 0.9, 0.95) for transformers and contrastive training, SGD + Nesterov
    momentum for the supervised CNN; no weight decay on biases and norms (1-D)."""
    params = list(setup.model.parameters())
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer: Any = (SGD(groups, lr=float(cfg.lr or 0), momentum=0.9, nesterov=True)
                      if cfg.objective == "supervised"
                      else AdamW(groups, lr=float(cfg.lr or 0), betas=(0.9, 0.95)))
    warmup = max(1, steps // 20) if cfg.warmup_steps is None else cfg.warmup_steps
    scheduler = lr_scheduler.get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    loader = RoundLoader(setup.n_train, int(cfg.batch_size or 1), setup.fetch, eval_every,
                         cfg.seed)
    # There even without --checkpoint-every (it then never fires): a checkpoint lists its
    # callbacks, and runs with and without periodic checkpoints should resume alike.
    ckpt = Checkpoint(cfg.checkpoint_dir or cfg.stem + ".checkpoints",
                      cfg.checkpoint_every or _NEVER, keep_last=cfg.keep_checkpoints)
    return ObjectiveTrainer(setup.model, optimizer, train_loader=loader,
                             eval_loader=setup.eval_batches, scheduler=scheduler, max_steps=steps,
                             clip_grad_norm=cfg.grad_clip or None, metrics=setup.metrics,
                             callbacks=[ckpt], log_dir=cfg.log_dir, log_every=cfg.log_every,
                             progress=cfg.progress, objective=setup.objective)


# ---- files ------------------------------------------------------------------------------------

def save_pretrained(cfg: PretrainConfig, setup: _Setup, metrics: dict[str, float], steps: int,
                    seconds: float) -> dict[str, str]:
    """Write the weights, config.json and tokenizer beside `cfg.out`; return their paths."""
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    paths = {"weights": os.fspath(cfg.out), "config": cfg.stem + ".config.json"}
    io.save(setup.saved.state_dict(), cfg.out,
                 metadata={"format": "minitl.pretrained/1", "model": cfg.model})
    tok = None
    if setup.codec is not None:
        paths["tokenizer"] = setup.codec.save(cfg.stem)
        tok = {"kind": setup.codec.kind, "file": os.path.basename(paths["tokenizer"]),
               "vocab_size": setup.codec.tokenizer.vocab_size}
    meta = {"format": "minitl.pretrained/1", "model": cfg.model,
            "family": model_family(cfg.model),
            "model_config": dataclasses.asdict(setup.saved.config), "tokenizer": tok,
            "objective": cfg.objective, "steps": steps, "train_seconds": round(seconds, 1),
            "metrics": metrics, "baselines": setup.baselines, **setup.extra,
            "settings": {k: v for k, v in dataclasses.asdict(cfg).items()
                         if k not in ("progress", "log_every", "out")}}
    Path(paths["config"]).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return paths


def load_pretrained(path: str | os.PathLike[str]) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer or None, config.json contents) of weights written by `pretrain`."""
    stem = os.fspath(path).removesuffix(".safetensors")
    meta = json.loads(Path(stem + ".config.json").read_text(encoding="utf-8"))
    model = MODELS[meta["family"]](FAMILIES[meta["family"]](**meta["model_config"]))
    model.load_state_dict(io.load(path))
    tok = meta["tokenizer"]
    if tok is not None:
        tok = TextCodec.load(tok["kind"], Path(path).parent / tok["file"]).tokenizer
    return model, tok, meta
