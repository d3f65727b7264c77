"""`minitl pretrain --model word2vec`: static word vectors, skip-gram with negative sampling
(minitl.pretrain.word2vec), on a text corpus.

    minitl pretrain --model word2vec --data movie-dialog --out w2v.safetensors
    minitl pretrain --model word2vec --data reviews.txt --epochs 15 --set dim=50 --set sample=1e-4

--set takes the fields of `train_word2vec`: dim, window, negative, min_count, max_vocab,
sample, batch_words. Writes OUT (both embedding tables and the vocabulary, for
`minitl.models.word2vec.Word2Vec.load`) and OUT's stem + .config.json (the settings, words/s,
the loss per epoch), then prints the nearest neighbours of a few common words as a check.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SETTABLE = ("dim", "window", "negative", "min_count", "max_vocab", "sample", "batch_words")
# Flags of the network models that mean nothing here, with their parser defaults.
NOT_HERE = {"objective": None, "tokenizer": None, "tokenizer_file": None, "vocab_size": None,
            "seq_len": None, "steps": None, "batch_size": None, "warmup_steps": None,
            "weight_decay": None, "grad_clip": None, "train_limit": None, "eval_every": None,
            "eval_batches": None, "log_dir": None, "checkpoint_every": 0, "checkpoint_dir": None,
            "resume": None, "quick": False}
PROBES = ("good", "money", "love", "car", "night")


def run(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from minitl.cli.args import UsageError, check_output_dir, user_errors
    from minitl.io import write_json
    from minitl.pretrain.word2vec import TrainStats, text_lines, train_word2vec

    given = ["--" + k.replace("_", "-") for k, d in NOT_HERE.items() if getattr(args, k) != d]
    if given:
        raise UsageError(f"{', '.join(given)} do not apply to --model word2vec")
    unknown = sorted(set(overrides) - set(SETTABLE))
    if unknown:
        raise UsageError(f"word2vec has no setting {', '.join(unknown)}; --set takes "
                         f"{', '.join(SETTABLE)}")
    out = Path(args.out)
    check_output_dir(out.parent if str(out.parent) else ".")
    epochs = args.epochs if args.epochs is not None else 5
    if epochs != int(epochs):
        raise UsageError(f"--epochs must be a whole number for word2vec, got {epochs}")
    with user_errors(KeyError, FileNotFoundError, usage=True):
        lines = text_lines(args.data or "movie-dialog", root=args.data_root)
    stats = TrainStats()
    settings = {**overrides, "epochs": int(epochs), "seed": args.seed}
    if args.lr is not None:
        settings["lr"] = args.lr
    with user_errors(ValueError, usage=False):
        model = train_word2vec(lines, **settings, log=None if args.quiet else print,
                               stats=stats)
    model.save(out)
    config = out.with_name(out.stem + ".config.json")
    write_json(str(config), {"family": "word2vec", "data": args.data or "movie-dialog",
                             "settings": settings, "vocabulary": len(model.vocab),
                             "corpus_words": stats.corpus_words, "pairs": stats.pairs,
                             "seconds": stats.seconds,
                             "words_per_second": stats.words_per_second,
                             "epoch_loss": stats.epoch_loss})
    print(f"trained {len(stats.epoch_loss)} epochs over {stats.corpus_words:,} words in "
          f"{stats.seconds:.1f} s ({stats.words_per_second:,.0f} words/s), vocabulary "
          f"{len(model.vocab):,}, loss per epoch "
          + " ".join(f"{v:.3f}" for v in stats.epoch_loss))
    for word in (w for w in PROBES if w in model.vocab.index):
        near = ", ".join(f"{w} {c:.2f}" for w, c in model.most_similar(word, 5))
        print(f"  {word}: {near}")
    print(f"wrote {out}, {config}")
    return 0
