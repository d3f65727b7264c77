"""What each recipe change bought: movie-reviews, validation split, 3 seeds per row.

The old recipe (sentences cut at 32 tokens, a random head at lr 1e-2, 3 epochs but at
least 30 steps at lr 1e-4) is changed one step at a time into the current one, and the
other strategies run beside it at the same label counts. Everything here is measured on
the validation split: these runs are what the recipes and `auto`'s thresholds were chosen
from; the test split is only read by benchmarks/transfer/data_efficiency.py.

    python -m benchmarks.transfer.recipe_ablation [--sizes 8,32,100] [--rows 0,1,2]
    python -m benchmarks.transfer.recipe_ablation --report-only
"""

from __future__ import annotations

import json
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import RESULTS, command_line, fmt_ms, log, machine, parser

OLD = {"head_init": "random", "steps": 30, "lr": 1e-4, "head_lr": 1e-2}
# (row name, strategy, RecipeConfig overrides, fixed max_length or None for the data's)
STEPS: list[tuple[str, str, dict[str, Any], int | None]] = [
    ("old recipe (full)", "full", OLD, 32),
    ("+ length from the data", "full", OLD, None),
    ("+ zero-shot head, head lr 1e-3", "full", {**OLD, "head_init": "zero-shot",
                                                "head_lr": 1e-3}, None),
    ("+ planned steps and lr (= full)", "full", {}, None),
    ("+ 10% held out for selection", "full", {"holdout": -1}, None),
    ("zero-shot", "zero-shot", {}, None),
    ("prototype", "prototype", {}, None),
    ("bow", "bow", {}, None),
    ("head, random init, no prior", "head", {"head_init": "random"}, None),
    ("head (zero-shot init and prior)", "head", {}, None),
    ("lora", "lora", {}, None),
    ("setfit", "setfit", {}, None),
    ("setfit-lora", "setfit-lora", {}, None),
    ("self-train (unlabeled: the rest of train)", "self-train", {}, None),
    ("full, twice the planned steps", "full", {"steps": -2}, None),
    ("self-train, 5x the pool, half of it pseudo-labelled", "self-train",
     {"unlabeled_per_label": 100, "pseudo_share": 0.5}, None),
    ("other domains' sentiment labels (tweets, amazon, nyt), no movie labels",
     "intermediate", {}, None),
    ("full, from the encoder tuned on those (STILTs)", "full", {"intermediate": True}, None),
    ("full, ensemble of 3 (mean probabilities)", "members", {}, None),
    ("full, soup of 3 (mean weights)", "members", {}, None),
]
MEMBERS = 3  # full fine-tunes of the same labels, seeds for order and dropout only
INTERMEDIATE_STEPS = 640  # one pass over the 10,200 sentences of the three other sets


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="8,32,100")
    p.add_argument("--rows", default=None, help="comma-separated row indices (default all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--results", default=str(RESULTS / "transfer_recipe_ablation.jsonl"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.results)
    rows_idx = ([int(i) for i in args.rows.split(",")] if args.rows
                else list(range(len(STEPS))))
    if not args.report_only:
        run(args, path, rows_idx)
    body = report(args, path)
    out = Path(args.docs) / "recipe_ablation_table.md"
    out.write_text(f"<!-- written by {command_line()} -->\n\n{body}", encoding="utf-8")
    print(body)
    return 0


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.exists() else []


def run(args: Any, path: Path, rows_idx: list[int]) -> None:
    import dataclasses

    from minitl.recipes.intermediate import intermediate_model, related_sentiment_sets
    from minitl.recipes.text_classification import (
        Fitted,
        RecipeConfig,
        load_backbone,
        load_task,
        run_strategy,
        score,
    )

    done = {(r["row"], r["size"], r["seed"]) for r in load(path)}
    bb = load_backbone(args.backbone, log=log)
    cache: dict[str, Any] = {}
    inter: Any = None
    for size in [int(z) for z in args.sizes.split(",")]:
        for seed in range(args.seeds):
            for i in rows_idx:
                name, strategy, over, length = STEPS[i]
                if (name, size, seed) in done or (strategy == "zero-shot" and seed > 0):
                    continue
                task = load_task("movie-reviews", bb.tokenizer, size, None, seed=seed,
                                 max_length=length, eval_split="validation",
                                 unlabeled=None if strategy == "self-train" else 0)
                over = dict(over)
                if over.get("holdout") == -1:
                    over["holdout"] = max(2, size // 10)
                if over.get("steps") == -2:
                    from minitl.recipes.plans import train_steps

                    over["steps"] = 2 * train_steps(size)
                use_inter = over.pop("intermediate", False) or strategy == "intermediate"
                if use_inter and inter is None:
                    inter = intermediate_model(
                        bb, related_sentiment_sets("movie-reviews"), task.max_length,
                        RecipeConfig(steps=INTERMEDIATE_STEPS, select=False,
                                     progress=args.progress))
                    log(f"intermediate encoder: {inter.n_labels} labels of "
                        f"{', '.join(inter.datasets)}, {inter.steps} steps")
                cfg = dataclasses.replace(RecipeConfig(seed=seed, progress=args.progress),
                                          **over)
                if strategy == "members":
                    if name.startswith("full, soup"):
                        continue  # written together with the ensemble row
                    for row_name, acc, secs in _members(bb, task, seed):
                        _append(path, {"row": row_name, "strategy": "full", "size": size,
                                       "seed": seed, "accuracy": acc, "steps": 0,
                                       "seconds": secs, "max_length": task.max_length})
                    continue
                if strategy == "intermediate":
                    t0 = time.perf_counter()
                    m = score(Fitted("intermediate", inter.model), inter.backbone, task.eval)
                    r = types.SimpleNamespace(accuracy=m["accuracy"], steps=0,
                                              seconds=time.perf_counter() - t0)
                else:
                    _, r = run_strategy(strategy, inter.backbone if use_inter else bb, task,
                                        cfg, feature_cache=cache,
                                        head_from=inter.model if use_inter else None)
                row = {"row": name, "strategy": strategy, "size": size, "seed": seed,
                       "accuracy": r.accuracy, "steps": r.steps, "seconds": r.seconds,
                       "max_length": task.max_length, "machine": machine(),
                       "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                log(f"{size:>4} seed {seed} {name:<45} {r.accuracy:.3f} ({r.steps} steps, "
                    f"{r.seconds:.0f} s)")


def _append(path: Path, row: dict[str, Any]) -> None:
    row = {**row, "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _members(bb: Any, task: Any, seed: int) -> list[tuple[str, float, float]]:
    """MEMBERS full fine-tunes of task.train: their mean probabilities (an ensemble) and
    the model with their mean weights (a uniform soup, arXiv:2203.05482)."""
    import numpy as np

    from minitl.recipes.sentence_model import log_probabilities, metrics, predict_logits
    from minitl.recipes.text_classification import RecipeConfig, fit
    from minitl.tensor import Tensor

    t0 = time.perf_counter()
    models = [fit("full", bb, task.train, RecipeConfig(seed=seed if m == 0 else seed * 1000 + m,
                                                       progress=False),
                  dataset=task.name, label_names=task.label_names,
                  max_length=task.max_length).model for m in range(MEMBERS)]
    secs = time.perf_counter() - t0
    probs = [np.exp(log_probabilities(predict_logits(m, task.eval))) for m in models]
    ens = metrics(np.mean(probs, 0), task.eval.labels)["accuracy"]
    sds = [m.state_dict() for m in models]
    models[0].load_state_dict({k: Tensor(np.mean([sd[k].numpy() for sd in sds], 0)
                                         .astype(sds[0][k].numpy().dtype)) for k in sds[0]})
    soup = metrics(predict_logits(models[0], task.eval), task.eval.labels)["accuracy"]
    return [(STEPS[-2][0], ens, secs), (STEPS[-1][0], soup, secs)]


def report(args: Any, path: Path) -> str:
    from minitl.train.report import markdown_table

    acc: dict[tuple[str, int], list[float]] = defaultdict(list)
    secs: dict[str, list[float]] = defaultdict(list)
    for r in load(path):
        acc[r["row"], r["size"]].append(r["accuracy"])
        secs[r["row"]].append(r["seconds"])
    sizes = [int(z) for z in args.sizes.split(",")]
    table = [[name, *[fmt_ms(acc[name, z]) for z in sizes],
              f"{sum(secs[name]) / len(secs[name]):.0f}" if secs[name] else "-"]
             for name, *_ in STEPS if any(acc[name, z] for z in sizes)]
    ms = sorted({r["machine"].split(" (load")[0] for r in load(path)})
    return (markdown_table(["recipe (validation accuracy)", *[f"{z} labels" for z in sizes],
                            "mean s"], table) + "\n\nMachines: " + "; ".join(ms) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
