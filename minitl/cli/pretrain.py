"""`minitl pretrain`: pretrain a model from scratch and save it for transfer.

  gpt-*     causal language modelling on a text corpus (default: movie-dialog), byte-level
            BPE learnt on the corpus (or --tokenizer char); reports validation perplexity
            next to the unigram baseline's.
  bert-*    masked language modelling (15% of the tokens, 80/10/10), WordPiece vocabulary
            learnt on the corpus (or --tokenizer bpe); reports accuracy on the masked
            validation positions next to chance and the most-frequent-token baseline.
  resnet-*  image classification (default: fashion-mnist), or --objective contrastive
            (SimCLR: NT-Xent between two augmented views, judged by k-NN accuracy).
  vit-*     a Vision Transformer on images (default: fashion-mnist) with --objective
            supervised (default), mae (masked autoencoding of 75% of the patches) or simclr;
            each judged by the k-NN accuracy of its frozen features. --quick: about a minute.
  word2vec  static word vectors: skip-gram with negative sampling on a text corpus
            (default: movie-dialog); --epochs, --lr, --seed and --set dim=/window=/
            negative=/min_count=/sample= (minitl/cli/pretrain_word2vec.py).

Writes OUT (safetensors weights), OUT's stem + .config.json (model config, tokenizer,
settings, final metrics) and the tokenizer (.tokenizer.json, or .vocab.txt for
WordPiece) beside it. A run with --checkpoint-every N can be killed and continued with
--resume CHECKPOINT and the same flags: the loss curve is the uninterrupted one.

--nproc N trains gpt, bert and resnet models data-parallel on N CPU ranks: the command
re-runs itself under the environment's `mpiexec` (pip install 'minitl[distributed]'), each
rank takes --batch-size / N examples of every batch, the gradients are averaged by
minitl.distributed.DistributedDataParallel, and rank 0 alone prints, logs, checkpoints and
writes OUT (docs/distributed.md). A checkpoint resumes with any --nproc.

Every value is checked before anything is read or trained: a bad flag, an input that does
not exist or an --out that cannot be written stops the command with one line and exit
status 2; a bad input file, or a loss that turns nan or infinite during training (the
weights are then not written), with exit status 1.
Example: minitl pretrain --model gpt-mini --data movie-dialog --steps 600 --out gpt.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from minitl.cli.args import (
    UsageError,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    user_errors,
)

# Only the lists the parser shows; the recipe (numpy, the models) loads when `run` starts.
_MODELS = ("gpt-tiny", "gpt-mini", "gpt-small", "bert-tiny", "bert-mini", "bert-small",
           "resnet-tiny", "resnet-mini", "resnet-small", "vit-tiny", "vit-mini", "vit-mini-p4",
           "vit-small", "word2vec")


# The --quick settings of vit runs (minitl.cli.pretrain_vit.QUICK), repeated for the help text
# so that the parser does not import the recipe.
_QUICK = {"--train-limit": 10_000, "--steps": 120, "--eval-batches": 8}


def add_arguments(p: argparse.ArgumentParser) -> None:
    # The description above is laid out by hand and every help text states its default:
    # keep the layout and do not append "(default: None)" to the flags that depend on the model.
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    what = p.add_argument_group("what to train")
    what.add_argument("--model", default="gpt-mini", choices=_MODELS, metavar="NAME", help=(
        f"named model size: {', '.join(_MODELS)} (the family picks the objective; default "
        "gpt-mini)"))
    what.add_argument("--data", default=None, metavar="NAME|FILE", help=(
        "dataset name (text: movie-dialog; images: fashion-mnist, mnist-5k, digits) or a UTF-8 "
        "text file whose last 10%% of lines are the validation set; default: movie-dialog "
        "for text models, fashion-mnist for resnet and vit"))
    what.add_argument("--data-root", default=None, metavar="PATH", help=(
        "read the --data dataset from this file or directory instead of the download cache "
        "(fashion-mnist: a directory of IDX files; default /usr/share/datasets/fashion-mnist "
        "from the Debian package dataset-fashion-mnist)"))
    what.add_argument("--objective", choices=("clm", "mlm", "supervised", "contrastive", "mae",
                                              "simclr"),
                      default=None, help=(
                          "clm for gpt, mlm for bert (their only objectives); resnet: "
                          "supervised (default) or contrastive (SimCLR NT-Xent on augmented "
                          "views, no labels; simclr is the same); vit: supervised (default), "
                          "mae or simclr (contrastive is the same)"))
    what.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="FIELD=VALUE", help=(
                          "override a model config field, e.g. --set n_layer=2 --set "
                          "hidden_dropout_prob=0 (repeatable; VALUE is read as JSON)"))
    what.add_argument("--quick", action="store_true", help=(
        "vit only: a run of about a minute on one core ("
        + ", ".join(f"{k} {v}" for k, v in _QUICK.items()) + " unless given)"))
    what.add_argument("--out", default="pretrained.safetensors", metavar="PATH", help=(
        "weights file (default pretrained.safetensors); PATH's stem + .config.json and the "
        "tokenizer file go beside it"))

    tok = p.add_argument_group("text")
    tok.add_argument("--tokenizer", choices=("bpe", "char", "wordpiece"), default=None, help=(
        "learnt on the training text: byte-level BPE (gpt default), characters (gpt), or a "
        "lower-cased WordPiece vocabulary (bert default); the saved file sits beside --out"))
    tok.add_argument("--tokenizer-file", default=None, metavar="PATH", help=(
        "load this saved tokenizer (of the --tokenizer kind) instead of learning one"))
    tok.add_argument("--vocab-size", type=positive_int, default=None, metavar="N",
                     help="size of a learnt BPE / WordPiece vocabulary (default 4096)")
    tok.add_argument("--seq-len", type=positive_int, default=None, metavar="T",
                     help="tokens per training window (default 128)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=positive_int, default=None, metavar="N", help=(
        "optimizer steps (default: 600 for text models; wins over --epochs)"))
    opt.add_argument("--epochs", type=positive_float, default=None, metavar="E", help=(
        "passes over the training set instead of --steps (default for resnet: 1)"))
    opt.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                     help="examples per step (default: gpt 16, bert 32, resnet 128)")
    opt.add_argument("--lr", type=positive_float, default=None, help=(
        "peak learning rate, reached after warmup and decayed to 0 on a cosine (default: "
        "AdamW at 1e-3 for gpt and contrastive resnet, 3e-4 for bert (post-LN BERT at 1e-3 "
        "stays on the most-frequent-token plateau), 0.05 with SGD + Nesterov momentum for "
        "supervised resnet)"))
    opt.add_argument("--warmup-steps", type=nonnegative_int, default=None, metavar="N",
                     help="linear warmup steps (default: 5%% of the steps)")
    opt.add_argument("--weight-decay", type=nonnegative_float, default=None, metavar="WD",
                     help="on weight matrices and kernels only (default: gpt 0.1, bert 0.01, "
                          "resnet 5e-4)")
    opt.add_argument("--grad-clip", type=nonnegative_float, default=None, metavar="NORM",
                     help="clip the global gradient norm (default 1.0 for text models; 0: off)")
    opt.add_argument("--seed", type=nonnegative_int, default=0,
                     help="seeds the init, data order, masks and augmentations (default 0)")
    opt.add_argument("--train-limit", type=positive_int, default=None, metavar="N",
                     help="use only the first N training characters (text) or images")

    ev = p.add_argument_group("evaluation, logs and checkpoints")
    ev.add_argument("--eval-every", type=positive_int, default=None, metavar="N", help=(
        "evaluate on the validation set every N steps and at the end (default: text models "
        "100, resnet once per epoch)"))
    ev.add_argument("--eval-batches", type=positive_int, default=None, metavar="N", help=(
        "validation batches per evaluation, spread over the validation set (default: 16 for "
        "text models, all for images); the final metrics use the same batches"))
    ev.add_argument("--log-dir", default=None, metavar="DIR",
                    help="write metrics.jsonl (one line per step and evaluation) there")
    ev.add_argument("--checkpoint-every", type=nonnegative_int, default=0, metavar="N",
                    help="save a resumable checkpoint every N steps (0: never)")
    ev.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                    help="where checkpoints go (default: OUT's stem + .checkpoints)")
    ev.add_argument("--keep-checkpoints", type=nonnegative_int, default=2, metavar="K", help=(
        "keep only the K newest checkpoints (default 2; 0: keep all); only checkpoint files "
        "of this run's name pattern in the checkpoint directory are ever deleted"))
    ev.add_argument("--resume", default=None, metavar="CKPT", help=(
        "continue from a checkpoint of a run with the same flags; the steps already done "
        "are not repeated and the log continues from the checkpoint. --lr and "
        "--weight-decay are part of the checkpoint's optimizer state: a resume asking for "
        "other values is refused, naming the saved and the requested ones"))
    ev.add_argument("--log-every", type=positive_int, default=10, metavar="N",
                    help="steps between progress lines when stderr is not a terminal (default 10)")
    ev.add_argument("--quiet", action="store_true", help="no progress output")

    par = p.add_argument_group("parallel")
    par.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=(
        "data-parallel ranks on this machine, started through mpiexec (gpt, bert, resnet; "
        "--batch-size must divide by N; default 1)"))


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as gelu
    return out


def config_from_args(args: argparse.Namespace) -> Any:
    """The PretrainConfig these parsed flags describe (flags share the field names)."""
    import dataclasses

    from minitl.recipes.pretraining import PretrainConfig

    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides=_overrides(args.overrides), progress=not args.quiet,
                  keep_checkpoints=args.keep_checkpoints or None)
    if values.get("objective") == "simclr" and not args.model.startswith("vit-"):
        values["objective"] = "contrastive"  # one method, two spellings
    return PretrainConfig(**values)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def run(args: argparse.Namespace) -> int:
    from minitl.recipes.pretraining import ConfigError, prepare
    from minitl.train.paths import OutputPathError

    # Wrong settings and paths (exit 2) are found before any data is read; a bad data,
    # tokenizer or checkpoint file (exit 1) before the first step. A ValueError in training
    # itself is a bug and keeps its traceback.
    if args.model == "word2vec" and args.nproc > 1:
        raise UsageError("--nproc is defined for gpt, bert and resnet models, not word2vec")
    if args.model == "word2vec":
        from minitl.cli import pretrain_word2vec

        return pretrain_word2vec.run(args, _overrides(args.overrides))
    vit = args.model.startswith("vit-")
    if args.quick and not vit:
        raise UsageError(f"--quick is defined for vit-* models, not {args.model}")
    from minitl.cli.ranks import in_job

    if args.nproc > 1 or in_job():
        return _run_distributed(args)
    with user_errors(ValueError, KeyError, OSError, usage=False), \
            user_errors(ConfigError, OutputPathError):
        if vit:
            from minitl.cli.pretrain_vit import prepare_vit

            run: Any = prepare_vit(config_from_args(args), quick=args.quick)
        else:
            run = prepare(config_from_args(args))
    return _report(run.train())


def _report(result: Any) -> int:
    print(f"trained {result.steps} steps in {result.train_seconds:.1f} s")
    print("final metrics: " + "  ".join(f"{k} {_fmt(v)}" for k, v in result.metrics.items()))
    print("baselines:     " + "  ".join(f"{k} {_fmt(v)}" for k, v in result.baselines.items()))
    print("wrote " + ", ".join(result.paths.values()))
    return 0


# ---- --nproc: one rank of a data-parallel run ----------------------------------------------

def _run_distributed(args: argparse.Namespace) -> int:
    """Outside a job: start --nproc ranks under mpiexec, return the job's status. Inside:
    train as one rank (rank 0 alone prints, logs, checkpoints and saves)."""
    import os

    from minitl.cli.ranks import as_rank, in_job, relaunch

    if args.model.startswith("vit-"):
        raise UsageError(f"--nproc is defined for gpt, bert and resnet models, not {args.model}")
    if not in_job():
        return relaunch(args.nproc, ["-m", "minitl.cli.pretrain"], args, add_arguments)

    def train(rank: int, world: int) -> int:
        import minitl.distributed as dist
        from minitl.recipes.pretraining import ConfigError, prepare
        from minitl.train.paths import OutputPathError

        if rank != 0:  # rank 0 alone speaks and writes
            args.quiet, args.log_dir, args.checkpoint_every = True, None, 0
        with user_errors(ValueError, KeyError, OSError, usage=False), \
                user_errors(ConfigError, OutputPathError):
            cfg = config_from_args(args)
            run: Any = prepare(cfg, None if rank == 0 else open(os.devnull, "w"))  # noqa: SIM115
        batch = int(run.cfg.batch_size or 1)
        if batch % world:
            raise UsageError(f"--batch-size {batch} does not divide over --nproc {world}")
        dist.DistributedDataParallel(run.setup.model)  # its hooks average every backward
        loader = run.trainer.train_loader
        fetch = loader.fetch
        loader.fetch = lambda indices: fetch(indices[rank::world])  # this rank's share
        if rank != 0:
            run.trainer.fit()
            return 0
        return _report(run.train())

    return as_rank("minitl pretrain", args.nproc, train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minitl pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    from minitl.cli import run_command

    return run_command("minitl pretrain", run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
