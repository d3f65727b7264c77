"""Does one encoder fine-tuned on three tasks at once do as well as three encoders fine-tuned
one task each? all-MiniLM-L6-v2 with heads for movie-review polarity (2 classes), TREC
question type (6) and SMS spam (2), against three single-task models at equal total
optimizer steps.

Labels. 160 movie-review, 80 TREC and 40 SMS sentences per seed, drawn stratified from
each train split by the seed (the eval splits are fixed). The sizes differ by 4x on
purpose: with equal sizes every temperature samples tasks uniformly and T would not
matter. From about 32 labels on, fine-tuning the encoder beats a head on the frozen one
(`plans.FULL_FROM`, docs/recipe_ablation.md), and 40 to 160 keeps a seed's four fine-tunes
(700 optimizer steps) within the budget of a shared two-core machine.

Single task. `minitl.recipes` full fine-tuning as shipped (`run_strategy("full")`): the
head starts at the zero-shot classifier, AdamW, encoder lr 3e-5, head lr 1e-3, weight
decay 0.01, batch 16, 10% warm-up then linear decay, for the planned steps of its label
count (`plans.train_steps`: 158 / 112 / 79, 349 in all).

Multi-task. `tl.MultiTaskModel` on one copy of the encoder, each head started at its task's
zero-shot classifier, the same optimizer, lrs, batch and schedule, for the same 349 steps
in all; each step one batch of one task, drawn by `tl.TaskSampler` with p_t ∝ n_t^(1/T).
T = 2 gives 158 / 112 / 79 expected steps, the single-task plan's split (its steps grow
as sqrt(n)); T = 1 gives the large task more (199 / 100 / 50), T = inf gives 116 each.

Choices on the validation splits only (`--split validation`, seed 0): T from {1, 2, inf}
(best mean accuracy over the three tasks); the lrs and steps are the recipes' own,
chosen on movie-reviews validation (docs/recipe_ablation.md). The test splits are scored
once, with the chosen T.

Reported per seed: each task's accuracy (and macro-F1), parameters held (one encoder and
three heads vs three encoders and three heads), training and eval wall time, the time to
label the same 300 sentences with all three tasks (one encoder pass vs three), and the
forgetting ledger (`tl.ForgettingLedger` with `SourceProbe`: how close the fine-tuned
encoder still embeds 200 lines of film dialogue to the original, cosine and 5-NN overlap;
1.0 = unchanged).

Rows go to benchmarks/results/multitask.jsonl (--quick: multitask_quick.jsonl), one per
model; a run skips the rows already there, so an interrupted run resumes.

    export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    python examples/multitask.py --quick                                # a few minutes
    python examples/multitask.py --split validation --seeds 0 --temperatures 1 2 inf \
        --methods multi
    python examples/multitask.py --split test --seeds 0 1 2 --methods single
    python examples/multitask.py --split test --seeds 0 1 2 --methods multi --temperatures inf
    python examples/multitask.py --report-only                          # tables from the rows

Validation chose T = inf (docs/multitask.md), the default of --temperatures.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import minitl as mt
from minitl import transfer as tl
from minitl.optim import AdamW
from minitl.optim.lr_scheduler import get_linear_schedule_with_warmup
from minitl.recipes import fewshot, plans
from minitl.recipes.sentence_model import Backbone, embed_texts, load_backbone, metrics
from minitl.recipes.source_side import SourceProbe, source_lines
from minitl.recipes.text_classification import RecipeConfig, run_strategy
from minitl.recipes.text_data import EncodedText, Task, load_task, make_loader
from minitl.train import LambdaCallback, Trainer

TASKS = ("movie-reviews", "trec-questions", "sms-spam")
LABELS = {"movie-reviews": 160, "trec-questions": 80, "sms-spam": 40}
QUICK_LABELS = {"movie-reviews": 64, "trec-questions": 32, "sms-spam": 16}
QUICK_STEPS, QUICK_EVAL = 15, 150  # per task; eval sentences per task
BATCH, WARMUP, WEIGHT_DECAY = 16, 0.1, 0.01
RESULTS = Path("benchmarks/results")


def single_steps(labels: dict[str, int], quick: bool) -> dict[str, int]:
    """The recipe's planned steps per task (capped at QUICK_STEPS for --quick)."""
    return {t: min(plans.train_steps(n, BATCH), QUICK_STEPS) if quick
            else plans.train_steps(n, BATCH) for t, n in labels.items()}


def zero_shot_head(head: Any, bb: Backbone, task: Task) -> None:
    vecs = fewshot.class_vectors(bb.encoder, bb.tokenizer,
                                 fewshot.describe(task.name, task.label_names), task.max_length)
    fewshot.init_head(head, vecs)


def score(model: tl.MultiTaskModel, task: Task) -> dict[str, float]:
    emb = embed_texts(model.bert, task.eval)  # (N, D), the same pooling as model.embed
    head = model.head(task.name)
    return metrics(emb @ head.weight.numpy().T + head.bias.numpy(), task.eval.labels)


def train_multitask(bb: Backbone, tasks: dict[str, Task], steps: int, temperature: float,
                    seed: int) -> tuple[tl.MultiTaskModel, dict[str, int], list[float]]:
    """One encoder copy, a zero-shot head per task, `steps` sampled steps; returns the
    model, the steps each task got and the step times."""
    mt.manual_seed(seed)
    encoder = copy.deepcopy(bb.encoder)
    model = tl.MultiTaskModel(encoder, {t: k.num_labels for t, k in tasks.items()},
                              dropout=encoder.config.hidden_dropout_prob)
    for t, k in tasks.items():
        zero_shot_head(model.head(t), bb, k)
    model.train()
    heads = list(model.heads.parameters())
    ids = {id(p) for p in heads}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in ids]},
        {"params": heads, "lr": plans.HEAD_LR}]
    opt = AdamW(groups, lr=plans.HYPER["full"], weight_decay=WEIGHT_DECAY)
    sampler = tl.TaskSampler({t: len(k.train) for t, k in tasks.items()}, temperature, seed)
    loaders = {t: make_loader(k.train, BATCH, shuffle=True, seed=seed) for t, k in tasks.items()}
    loader = tl.MultiTaskLoader(loaders, sampler, length=steps)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step_end(trainer: Trainer, record: Any) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    trainer = Trainer(model, opt, None, loader, max_steps=steps, seed=seed,
                      scheduler=get_linear_schedule_with_warmup(opt, int(WARMUP * steps),
                                                                steps),
                      callbacks=[LambdaCallback(on_step_end=on_step_end)], progress=False)
    trainer.fit()
    return model, {t: loader.counts[t] for t in tasks}, times


def all_task_timing(bb: Backbone, data: EncodedText, repeats: int = 3) -> dict[str, Any]:
    """Seconds to label `data` with all three tasks: one encoder pass (and three heads) for
    the multi-task model, one pass of each of three encoders for the single-task models.
    The cost does not depend on the weights, so copies of the pristine encoder stand in
    for the trained ones; the two are timed in turn after a warm-up pass, the best of
    `repeats` each."""
    model = tl.MultiTaskModel(bb.encoder, {t: 2 for t in TASKS})
    encoders = [copy.deepcopy(bb.encoder) for _ in TASKS]
    embed_texts(bb.encoder, data)
    multi, single = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        emb = embed_texts(model.bert, data)
        for t in model.tasks:
            emb @ model.head(t).weight.numpy().T
        multi.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for enc in encoders:
            embed_texts(enc, data)
        single.append(time.perf_counter() - t0)
    return {"sentences": len(data), "multi_seconds": min(multi),
            "single_seconds": min(single), "repeats": repeats}


def mixed_sentences(tasks: dict[str, Task], n: int) -> EncodedText:
    """The first n eval sentences of each task, one set (labels unused)."""
    ids = [x for k in tasks.values() for x in k.eval.ids[:n]]
    return EncodedText(ids, np.zeros(len(ids)))


def n_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["split"], r["seed"], r["method"], r.get("task"), r.get("temperature"))


def run_seed(a: argparse.Namespace, bb: Backbone, probe: SourceProbe, seed: int,
             rows: list[dict[str, Any]], out: Path) -> None:
    done = {key(r) for r in rows}
    labels = QUICK_LABELS if a.quick else LABELS
    steps = single_steps(labels, a.quick)
    eval_size = QUICK_EVAL if a.quick else None
    tasks = {t: load_task(t, bb.tokenizer, labels[t], eval_size, seed=seed, eval_split=a.split)
             for t in TASKS}
    common = {"split": a.split, "seed": seed, "labels": labels, "threads": a.threads,
              "quick": a.quick}

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "ledger"}), flush=True)

    for t in TASKS if "single" in a.methods else ():
        r = {**common, "method": "single", "task": t, "temperature": None}
        if key(r) in done:
            continue
        cfg = RecipeConfig(seed=seed, steps=steps[t], progress=False)
        _, res = run_strategy("full", bb, tasks[t], cfg, probe=probe)
        emit({**r, "accuracy": {t: res.accuracy}, "macro_f1": {t: res.macro_f1},
              "steps": {t: res.steps}, "train_seconds": res.seconds,
              "eval_seconds": res.eval_seconds, "params": res.total,
              "source": res.source, "ledger": res.ledger})
    for temp in a.temperatures if "multi" in a.methods else ():
        r = {**common, "method": "multi", "task": None, "temperature": temp}
        if key(r) in done:
            continue
        ledger = tl.ForgettingLedger(probe, lambda m: {}, memory="rss")
        ledger.record("before", 0, model=bb.encoder)
        t0 = time.perf_counter()
        model, counts, times = train_multitask(bb, tasks, sum(steps.values()), temp, seed)
        train_s = time.perf_counter() - t0
        for s in times:
            ledger.add_step_time(s)
        t1 = time.perf_counter()
        scores = {t: score(model, k) for t, k in tasks.items()}
        eval_s = time.perf_counter() - t1
        acc = {f"{t}:accuracy": s["accuracy"] for t, s in scores.items()}

        def target_eval(m: Any, acc: dict[str, float] = acc) -> dict[str, float]:
            return acc

        ledger.target_eval = target_eval
        after = ledger.record("after", sum(counts.values()), model=model)
        ledger.close()
        emit({**r, "accuracy": {t: s["accuracy"] for t, s in scores.items()},
              "macro_f1": {t: s["macro_f1"] for t, s in scores.items()}, "steps": counts,
              "train_seconds": train_s, "eval_seconds": eval_s, "params": n_params(model),
              "source": after["source"], "ledger": ledger.to_dict()})


def fmt(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not xs:
        return "—"
    return f"{scale * np.mean(xs):.{digits}f} ± {scale * np.std(xs):.{digits}f}"


def report(rows: list[dict[str, Any]], split: str) -> None:
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        print(f"no rows for split {split}")
        return
    temps = sorted({r["temperature"] for r in rows if r["method"] == "multi"}, key=float)
    seeds = sorted({r["seed"] for r in rows if r["method"] in ("single", "multi")})
    print(f"\n### {split} split, seeds {seeds} (accuracy %, mean ± std over seeds)\n")
    def picks(temp: float | None) -> Callable[[dict[str, Any]], bool]:
        if temp is None:
            return lambda r: bool(r["method"] == "single")
        return lambda r: bool(r["method"] == "multi" and r["temperature"] == temp)

    cols = [("single-task x3", picks(None))]
    cols += [(f"multi-task T={t:g}", picks(t)) for t in temps]
    cols = [(c, sel) for c, sel in cols if any(sel(r) for r in rows)]
    print("| task | " + " | ".join(c for c, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for t in [*TASKS, "mean of 3"]:
        cells = []
        for _, sel in cols:
            chosen = [r for r in rows if sel(r)]
            if t == "mean of 3":
                by_seed: dict[int, list[float]] = {}
                for r in chosen:
                    by_seed.setdefault(r["seed"], []).extend(r["accuracy"].values())
                vals = [float(np.mean(v)) for v in by_seed.values() if len(v) == len(TASKS)]
            else:
                vals = [r["accuracy"][t] for r in chosen if t in r["accuracy"]]
            n = f" (n={len(vals)})" if len(vals) != len(seeds) else ""
            cells.append(fmt(vals) + n)
        print(f"| {t} | " + " | ".join(cells) + " |")
    print("\n| per seed | " + " | ".join(c for c, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label, fn in (
            ("parameters held (M)", lambda rs: [sum(r["params"] for r in rs) / 1e6]),
            ("training s", lambda rs: [sum(r["train_seconds"] for r in rs)]),
            ("eval s (the three eval splits)", lambda rs: [sum(r["eval_seconds"] for r in rs)]),
            ("steps per task", None),
            ("source cosine after (1 = unchanged)",
             lambda rs: [r["source"].get("cosine", math.nan) for r in rs]),
            ("source 5-NN overlap after", lambda rs: [r["source"].get("knn", math.nan)
                                                      for r in rs])):
        cells = []
        for _, sel in cols:
            per_seed = [[r for r in rows if sel(r) and r["seed"] == s] for s in seeds]
            per_seed = [rs for rs in per_seed if rs]
            if fn is None:
                counts = [[r["steps"].get(t, 0) for r in rs for t in TASKS if t in r["steps"]]
                          for rs in per_seed]
                cells.append(" / ".join(f"{np.mean([c[i] for c in counts]):.0f}"
                                        for i in range(len(TASKS))) if counts else "—")
                continue
            vals = [v for rs in per_seed for v in fn(rs)]
            digits = 3 if "source" in label else 1
            cells.append(fmt(vals, 1.0, digits))
        print(f"| {label} | " + " | ".join(cells) + " |")
    for r in (r for r in rows if r["method"] == "timing"):
        print(f"\nLabelling {r['sentences']} sentences with all three tasks (best of "
              f"{r['repeats']}): three single-task encoders {r['single_seconds']:.1f} s, one "
              f"multi-task encoder and three heads {r['multi_seconds']:.1f} s.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_LABELS} labels, {QUICK_STEPS} steps per task, "
                        f"{QUICK_EVAL} eval sentences per task, seed 0")
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="sampler temperatures of the multi-task runs (inf: uniform, the "
                        "default, chosen on validation)")
    p.add_argument("--timing-sentences", type=int, default=100,
                   help="eval sentences per task labelled by all three tasks (timing)")
    p.add_argument("--methods", nargs="+", choices=("single", "multi"),
                   default=["single", "multi"], help="which models to train (both by default)")
    p.add_argument("--report-only", action="store_true", help="print the tables and exit")
    p.add_argument("--out", default=None, help="the JSONL file (default by --quick)")
    a = p.parse_args()
    out = Path(a.out) if a.out else RESULTS / ("multitask_quick.jsonl" if a.quick
                                               else "multitask.jsonl")
    rows = load_rows(out)
    if a.report_only:
        for split in ("validation", "test"):
            report(rows, split)
        return
    a.seeds = a.seeds if a.seeds is not None else [0]
    a.temperatures = a.temperatures or [math.inf]
    a.threads = {k: v for k, v in os.environ.items() if k.endswith("_THREADS")}
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"python {platform.python_version()}, numpy {np.__version__}, threads {a.threads}",
          flush=True)
    bb = load_backbone("minilm-l6")
    probe = SourceProbe(bb.encoder, bb.tokenizer, source_lines("movie-dialog", 200))
    for seed in a.seeds:
        run_seed(a, bb, probe, seed, rows, out)
    timing = {"split": a.split, "seed": None, "method": "timing", "quick": a.quick}
    if a.timing_sentences and key(timing) not in {key(r) for r in rows}:
        tasks = {t: load_task(t, bb.tokenizer, 1, QUICK_EVAL if a.quick else None,
                              eval_split=a.split) for t in TASKS}
        timing.update(all_task_timing(bb, mixed_sentences(tasks, a.timing_sentences)),
                      threads=a.threads)
        rows.append(timing)
        with out.open("a") as f:
            f.write(json.dumps(timing) + "\n")
    report(rows, a.split)


if __name__ == "__main__":
    main()
