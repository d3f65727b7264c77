"""The settings of a pretraining run (`PretrainConfig`), the defaults per model family, and
every check that can be made on them before any data is read or any step is trained.

`PretrainConfig.resolved()` fills in the family's defaults and checks each value (range,
type, combination, the model config the `overrides` give); `check_paths` checks the files
the run reads and writes (inputs that must exist, outputs that must be writable); the
recipe (`minitl.recipes.pretraining`) then checks what only the data can tell (enough text
for one batch) and a resumed checkpoint's saved settings. Each problem raises `ConfigError`
naming the setting by its `minitl pretrain` flag, since the fields share the flags' names.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from minitl.models import BertConfig, GPTConfig, ResNetConfig
from minitl.train.paths import check_output_dir, check_output_file

__all__ = ["CONTRASTIVE_DEFAULTS", "DEFAULTS", "FAMILIES", "OBJECTIVES", "TOKENIZERS",
           "ConfigError", "PretrainConfig", "check_paths", "model_family"]

FAMILIES: dict[str, Any] = {"gpt": GPTConfig, "bert": BertConfig, "resnet": ResNetConfig}
OBJECTIVES = {"gpt": ("clm",), "bert": ("mlm",), "resnet": ("supervised", "contrastive")}
TOKENIZERS = {"gpt": ("bpe", "char", "wordpiece"), "bert": ("wordpiece", "bpe")}
# Model config fields the data decides (the tokenizer's size, the images' shape): an
# override would build a model that does not fit its inputs.
FROM_DATA = {"gpt": ("vocab_size",), "bert": ("vocab_size", "pad_token_id"),
             "resnet": ("in_channels", "num_classes")}

# Per family: what a field left at None becomes.
DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt": {"data": "movie-dialog", "tokenizer": "bpe", "objective": "clm", "vocab_size": 4096,
            "seq_len": 128, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.1, "steps": 600,
            "eval_every": 100, "eval_batches": 16, "grad_clip": 1.0},
    # bert lr: at 1e-3 post-LN BERT stayed on the most-frequent-token plateau (pretraining.md)
    "bert": {"data": "movie-dialog", "tokenizer": "wordpiece", "objective": "mlm", "steps": 600,
             "vocab_size": 4096, "seq_len": 128, "batch_size": 32, "lr": 3e-4, "grad_clip": 1.0,
             "weight_decay": 0.01, "eval_every": 100, "eval_batches": 16},
    "resnet": {"data": "fashion-mnist", "objective": "supervised", "batch_size": 128,
               "lr": 0.05, "weight_decay": 5e-4, "epochs": 1.0, "grad_clip": None},
}
# Contrastive training uses AdamW (see `_build_trainer`), which wants a smaller step than SGD.
CONTRASTIVE_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-4}


class ConfigError(ValueError):
    """A pretraining setting that cannot work, found before training (or, for the data
    size and a resumed checkpoint's settings, before the first step)."""


def model_family(name: str) -> str:
    """"gpt", "bert" or "resnet" for a named size such as "gpt-mini"."""
    for family, config_cls in FAMILIES.items():
        if name in config_cls.SIZES:
            return family
    raise ConfigError(f"unknown model {name!r}; choose one of "
                      f"{', '.join(n for c in FAMILIES.values() for n in c.sizes())}")


@dataclass
class PretrainConfig:
    """One pretraining run; fields left at None take the family's `DEFAULTS`."""

    model: str = "gpt-mini"  # a named size: gpt-*, bert-* or resnet-*
    out: str = "pretrained.safetensors"  # the weights; config/tokenizer files go beside
    data: str | None = None  # a `load_dataset` name or a UTF-8 text file (last 10% = val)
    data_root: str | None = None  # read dataset `data` from this file / directory instead
    steps: int | None = None  # optimizer steps (win over `epochs` when both are set)
    epochs: float | None = None  # passes over the training set, converted into steps
    batch_size: int | None = None
    lr: float | None = None  # peak learning rate (linear warmup, cosine decay to 0)
    warmup_steps: int | None = None  # None: 5% of the steps
    weight_decay: float | None = None  # on matrices and kernels only
    grad_clip: float | None = None  # max global grad norm; 0: off
    seq_len: int | None = None  # tokens per training window (text models)
    tokenizer: str | None = None  # "bpe" | "char" | "wordpiece"
    tokenizer_file: str | None = None  # load this saved tokenizer instead of learning one
    vocab_size: int | None = None  # target size of a learnt BPE / WordPiece vocabulary
    objective: str | None = None  # "clm" (gpt), "mlm" (bert), "supervised" | "contrastive"
    seed: int = 0  # init, data order, masks, augmentations
    eval_every: int | None = None  # steps between evaluations (resnet: one epoch)
    eval_batches: int | None = None  # validation batches per evaluation (None: all)
    train_limit: int | None = None  # use at most this many training chars / images
    log_dir: str | None = None  # metrics.jsonl (+ loss.png) go here
    checkpoint_every: int = 0  # a resumable checkpoint every N steps (0: never)
    checkpoint_dir: str | None = None  # default: <out stem>.checkpoints
    keep_checkpoints: int | None = 2  # newest checkpoints kept (None: all)
    # A checkpoint written by a run with the same settings; --lr and --weight-decay live in
    # its optimizer state, and a resume that asks for other values is refused.
    resume: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields
    progress: bool = True
    log_every: int = 10  # steps between progress lines when not on a terminal

    def resolved(self) -> PretrainConfig:
        """A copy with the family's defaults filled in; ConfigError if a value is out of
        range, of the wrong type, or does not go with the others."""
        family = model_family(self.model)
        defaults = {**DEFAULTS[family],
                    **(CONTRASTIVE_DEFAULTS if self.objective == "contrastive" else {})}
        # Asked-for epochs replace the default steps; asked-for steps win over epochs.
        cfg = dataclasses.replace(self, **{
            k: v for k, v in defaults.items() if getattr(self, k) is None
            and not (k == "epochs" and self.steps) and not (k == "steps" and self.epochs)})
        if cfg.objective not in OBJECTIVES[family] or (
                family != "resnet" and cfg.tokenizer not in TOKENIZERS[family]):
            raise ConfigError(f"{self.model} trains with objective {OBJECTIVES[family]} and a "
                              f"tokenizer among {TOKENIZERS.get(family, (None,))} (MLM needs "
                              f"[MASK]), not {cfg.objective!r} and {cfg.tokenizer!r}")
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches",
                     "vocab_size", "train_limit", "log_every", "keep_checkpoints"):
            _integer(name, getattr(cfg, name), 1)
        for name in ("seed", "warmup_steps", "checkpoint_every"):
            _integer(name, getattr(cfg, name), 0)
        _number("epochs", cfg.epochs, positive=True)
        _number("lr", cfg.lr, positive=True)
        _number("weight_decay", cfg.weight_decay, positive=False)
        _number("grad_clip", cfg.grad_clip, positive=False)
        if family == "bert" and cfg.seq_len is not None and cfg.seq_len < 2:
            raise ConfigError(f"--seq-len must be at least 2 for {self.model} (a window is "
                              f"[CLS] and at least one token), got {cfg.seq_len}")
        for name in ("out", "data", "data_root", "tokenizer_file", "log_dir",
                     "checkpoint_dir", "resume"):
            value = getattr(cfg, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"{_flag(name)} must be a path, got {value!r}")
        _check_overrides(cfg, family)
        return cfg

    @property
    def stem(self) -> str:
        return os.fspath(self.out).removesuffix(".safetensors")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _integer(name: str, value: Any, lo: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)
                              or value < lo):
        raise ConfigError(f"{_flag(name)} must be an integer >= {lo}, got {value!r}")


def _number(name: str, value: Any, positive: bool) -> None:
    if value is None:
        return
    if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
            or (value <= 0 if positive else value < 0)):
        raise ConfigError(f"{_flag(name)} must be a finite number {'>' if positive else '>='}"
                          f" 0, got {value!r}")


def _check_overrides(cfg: PretrainConfig, family: str) -> None:
    """The --set fields exist, are not decided by the data, and make a valid config."""
    if not isinstance(cfg.overrides, dict):
        raise ConfigError(f"overrides must be a dict of model config fields, got "
                          f"{type(cfg.overrides).__name__}")
    config_cls = FAMILIES[family]
    names = [f.name for f in dataclasses.fields(config_cls)]
    for key in cfg.overrides:
        if key not in names:
            raise ConfigError(f"--set {key}: {config_cls.__name__} has no field {key!r}; its "
                              f"fields: {', '.join(names)}")
        if key in FROM_DATA[family]:
            raise ConfigError(f"--set {key}: {key} is decided by the "
                              f"{'tokenizer' if family != 'resnet' else 'images'}" +
                              (" (use --vocab-size)" if key == "vocab_size" else ""))
    try:
        config_cls.named(cfg.model, **cfg.overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--set: {e}") from None


def check_paths(cfg: PretrainConfig) -> None:
    """The files the run reads exist and those it writes can be written, before any work:
    ConfigError (or OutputPathError) naming the flag and the path; a plain ValueError if
    the --resume file is not a training checkpoint (a bad file rather than a bad flag)."""
    from minitl.data import list_datasets

    family = model_family(cfg.model)
    names = ", ".join(list_datasets())
    if cfg.data is not None and cfg.data not in list_datasets():
        if family == "resnet":
            raise ConfigError(f"--data {cfg.data!r} is not a dataset name ({names})")
        if not Path(cfg.data).is_file():
            raise ConfigError(f"--data {cfg.data!r} is neither a dataset name ({names}) nor "
                              "a file")
    for name, want_file in (("data_root", None), ("tokenizer_file", True), ("resume", True)):
        path = getattr(cfg, name)
        if path is None:
            continue
        if not os.path.exists(path):
            raise ConfigError(f"{_flag(name)} {os.fspath(path)!r} does not exist")
        if want_file and not os.path.isfile(path):
            raise ConfigError(f"{_flag(name)} {os.fspath(path)!r} is not a file")
    if cfg.resume is not None:  # its header only: a wrong file is named before any work
        from minitl.io import load_metadata
        from minitl.train.checkpoint import FORMAT

        found = load_metadata(cfg.resume).get("format")
        if found != FORMAT:
            raise ValueError(f"--resume {os.fspath(cfg.resume)!r} is not a minitl training "
                             f"checkpoint (format {found!r}, expected {FORMAT!r})")
    check_output_file(cfg.out, "--out")
    written = {os.path.realpath(p) for p in (cfg.out, cfg.stem + ".config.json",
                                             cfg.stem + ".tokenizer.json",
                                             cfg.stem + ".vocab.txt")}
    for name in ("data", "tokenizer_file", "resume"):
        path = getattr(cfg, name)
        if path is not None and os.path.realpath(path) in written:
            raise ConfigError(f"--out {os.fspath(cfg.out)!r} would overwrite {_flag(name)} "
                              f"{os.fspath(path)!r}, an input of the run")
    for suffix in (".config.json", ".tokenizer.json", ".vocab.txt"):
        check_output_file(cfg.stem + suffix, "--out's companion file")
    if cfg.checkpoint_every:
        check_output_dir(cfg.checkpoint_dir or cfg.stem + ".checkpoints",
                         "--checkpoint-dir")
    if cfg.log_dir is not None:
        check_output_dir(cfg.log_dir, "--log-dir")
