"""Ensembles of transfer-learned models: k LoRA members on one shared base vs k full
fine-tunes (their logit ensemble and their uniform soup), movie-reviews, MiniLM.

Every member trains on the SAME label sample (load_task seed 0); the members differ only in
the recipe seed (LoRA/head init, data order, dropout). Accuracy, the seconds to score the
eval set, and the parameters held are measured on the validation split unless
--eval-split test is given (nothing is chosen from these numbers).

--diverse instead trains members that differ more: LoRA on 3 label samples (load_task
seeds 0, 1, 2) and 6 strategies on label sample 0 (full, lora, setfit, head, prototype,
bow). Every choice (logits or log-probability averaging, the greedy subset, the best
member to compare with) is made on the validation split; the test split is then scored
with the choices fixed. Each member's validation and test scores are kept under
--cache-dir, so an interrupted run resumes at the first member it has not trained.

    python -m benchmarks.transfer.ensembles [--size 100] [--members 3] [--eval-size 500]
        [--max-steps N] [--eval-split validation]
    python -m benchmarks.transfer.ensembles --diverse [--size 100] [--max-steps N]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS, command_line, log, machine, parser


def score_logits(forward: Any, data: Any, batch_size: int) -> tuple[np.ndarray, float]:
    """(N, ...) outputs of `forward(ids, mask)` over `data` batched by length (less padding,
    as minitl.recipes.sentence_model.embed_texts), and the wall seconds it took."""
    from minitl.autograd_state import no_grad
    from minitl.data.loader import pad_collate

    order = np.argsort(np.asarray(data.lengths), kind="stable")
    collate, chunks = pad_collate(0), []
    t0 = time.perf_counter()
    with no_grad():
        for i in range(0, len(order), batch_size):
            b = collate([data[int(j)] for j in order[i:i + batch_size]])
            chunks.append(forward(b["input_ids"], b["attention_mask"]).numpy())
    secs = time.perf_counter() - t0
    got = np.concatenate(chunks, axis=-2)  # (..., N, C) in length order
    out = np.empty_like(got)
    out[..., order, :] = got
    return out, secs


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=100, help="labelled sentences")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--eval-split", default="validation", choices=("validation", "test"))
    p.add_argument("--max-steps", type=int, default=None, help="cap on each member's steps")
    p.add_argument("--batch-size", type=int, default=64, help="eval batch (sentences)")
    p.add_argument("--results", default=str(RESULTS / "transfer_ensembles.jsonl"))
    p.add_argument("--diverse", action="store_true",
                   help="members from 3 label samples and 6 strategies (both splits)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "minitl" / "ensembles"),
                   help="--diverse: each member's scores, for resuming")
    args = p.parse_args(argv)
    rows = run_diverse(args) if args.diverse else run(args)
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    log(f"{len(rows)} rows appended to {path}")
    return 0


def run(args: Any) -> list[dict[str, Any]]:
    import copy

    from minitl import transfer as tl
    from minitl.recipes.sentence_model import metrics
    from minitl.recipes.text_classification import (
        RecipeConfig,
        build_model,
        fit,
        load_backbone,
        load_task,
    )
    from minitl.tensor import Tensor
    from minitl.transfer.ensemble import ensemble_parameters

    where = machine()
    log(where)
    bb = load_backbone(args.backbone, log=log)
    task = load_task("movie-reviews", bb.tokenizer, args.size, args.eval_size, seed=0,
                     eval_split=args.eval_split)
    ev, k, bs = task.eval, args.members, args.batch_size
    common = {"size": args.size, "members": k, "eval_split": args.eval_split,
              "n_eval": len(ev), "max_length": task.max_length, "max_steps": args.max_steps,
              "machine": where, "command": command_line(),
              "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rows: list[dict[str, Any]] = []

    def row(name: str, acc: float, eval_s: float | None, held: int, **extra: Any) -> None:
        r = {"row": name, "accuracy": acc, "eval_seconds": eval_s, "parameters_held": held,
             "megabytes_held": held * 4 / 2**20, **extra, **common,
             "load_average": os.getloadavg()[0]}
        rows.append(r)
        log(f"{name:<44} acc {acc:.3f}  eval {eval_s if eval_s is None else round(eval_s, 1)}"
            f" s  params {held / 1e6:.2f} M  (load {r['load_average']:.1f})")

    def train(strategy: str, seed: int) -> Any:
        cfg = RecipeConfig(seed=seed, progress=args.progress, max_steps=args.max_steps)
        t0 = time.perf_counter()
        f = fit(strategy, bb, task.train, cfg, dataset=task.name,
                label_names=task.label_names, max_length=task.max_length)
        log(f"{strategy} member seed {seed}: {f.steps} steps, "
            f"{time.perf_counter() - t0:.0f} s")
        return f.model, f.steps, time.perf_counter() - t0

    labels = ev.labels
    # ---- k LoRA members -> one AdapterEnsemble on a single frozen base
    lora = [train("lora", s) for s in range(k)]
    states = [{n: Tensor(v.numpy().copy()) for n, v in tl.adapter_state_dict(m).items()}
              for m, _, _ in lora]
    solo, solo_s = score_logits(lora[0][0].eval(), ev, bs)
    row("LoRA member 0 alone (own model)", metrics(solo, labels)["accuracy"], solo_s,
        ensemble_parameters(lora[0][0]), steps=lora[0][1], train_seconds=lora[0][2])
    base = build_model("lora", bb, len(task.label_names), RecipeConfig(seed=0))
    ens = tl.AdapterEnsemble(base, states)
    del lora
    per, ens_s = score_logits(ens.member_outputs, ev, bs)  # (k, N, C), one mixed pass each
    for i in range(k):
        row(f"LoRA member {i} (from the adapter ensemble)", metrics(per[i], labels)["accuracy"],
            None, 0, seed=i)
    drift = float(np.abs(per[0] - solo).max())
    row(f"LoRA logit ensemble of {k} (AdapterEnsemble, one base)",
        metrics(per.mean(0), labels)["accuracy"], ens_s, ensemble_parameters(ens),
        member0_max_abs_diff_vs_alone=drift)
    log(f"member 0 through the ensemble vs alone: max |diff| {drift:.2e}")

    # ---- k full fine-tunes -> logit ensemble and uniform soup
    full = [train("full", s) for s in range(k)]
    models = [m.eval() for m, _, _ in full]
    outs, each_s = [], []
    for i, (m, steps, secs) in enumerate(full):
        o, s = score_logits(m, ev, bs)
        outs.append(o)
        each_s.append(s)
        row(f"full member {i}", metrics(o, labels)["accuracy"], s, ensemble_parameters(m),
            seed=i, steps=steps, train_seconds=secs)
    logit_ens = tl.LogitEnsemble(models)
    ens_out, lens_s = score_logits(logit_ens, ev, bs)
    assert np.array_equal(ens_out, np.mean(outs, 0)) or np.allclose(ens_out, np.mean(outs, 0))
    row(f"full logit ensemble of {k} (LogitEnsemble)", metrics(ens_out, labels)["accuracy"],
        lens_s, ensemble_parameters(logit_ens), sum_of_member_eval_seconds=sum(each_s))
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(tl.model_soup([m.state_dict() for m in models]))
    so, soup_s = score_logits(soup.eval(), ev, bs)
    row(f"full uniform soup of {k}", metrics(so, labels)["accuracy"], soup_s,
        ensemble_parameters(soup))
    return rows


# ---- --diverse: members from other label samples and other strategies ---------------------

LABEL_SEEDS = (0, 1, 2)
# LoRA for the label-sample members: on validation (the seed rows above, label sample 0) its
# members scored 0.742 / 0.741 / 0.748 against full's 0.742 / 0.745 / 0.743, a tie at a
# third less training time, and its members can share one base (AdapterEnsemble).
LABEL_STRATEGY = "lora"
STRATEGIES = ("full", "lora", "setfit", "head", "prototype", "bow")
FROZEN_BASE = ("lora", "head", "prototype")  # keep the pristine encoder's weights as they are


def member_names() -> list[tuple[str, int]]:
    """(strategy, label seed), cheapest first within each group, setfit (slowest) last."""
    first = [(LABEL_STRATEGY, 0), ("full", 0), ("head", 0), ("prototype", 0), ("bow", 0)]
    rest = [(LABEL_STRATEGY, s) for s in LABEL_SEEDS[1:]] + [("setfit", 0)]
    return first + rest


def average_scores(scores: list[np.ndarray], average: str) -> np.ndarray:
    """(N, C): the mean of the members' logits, or of their log-probabilities."""
    from minitl.recipes.sentence_model import log_probabilities

    if average == "log_probs":
        scores = [log_probabilities(s) for s in scores]
    return np.mean(scores, 0)


def greedy_selection(val: dict[str, np.ndarray], labels: np.ndarray) -> list[str]:
    """Forward selection on validation (Caruana et al., ICML 2004, without replacement):
    from the best member, add the one that most raises the accuracy of the log-probability
    average; stop when none raises it."""
    def acc(names: list[str]) -> float:
        pred = average_scores([val[n] for n in names], "log_probs").argmax(-1)
        return float((pred == labels).mean())

    chosen = [max(val, key=lambda n: acc([n]))]
    while True:
        rest = [n for n in val if n not in chosen]
        if not rest:
            return chosen
        best = max(rest, key=lambda n: acc(chosen + [n]))
        if acc(chosen + [best]) <= acc(chosen):
            return chosen
        chosen.append(best)


def train_member(strategy: str, label_seed: int, bb: Any, args: Any, evals: dict[str, Any],
                 cache: dict[str, np.ndarray]) -> dict[str, Any]:
    """Train one member, score both splits; its scores (logits, or log-probabilities for
    bow), seconds and parameter counts, and for LoRA its adapter state."""
    from minitl import transfer as tl
    from minitl.recipes.sentence_model import metrics
    from minitl.recipes.text_classification import RecipeConfig, fit, load_task
    from minitl.transfer.ensemble import ensemble_parameters

    task = load_task("movie-reviews", bb.tokenizer, args.size, args.eval_size, seed=label_seed)
    cfg = RecipeConfig(seed=0, progress=args.progress, max_steps=args.max_steps)
    t0 = time.perf_counter()
    f = fit(strategy, bb, task.train, cfg, dataset=task.name, label_names=task.label_names,
            max_length=task.max_length, cache=cache)
    out: dict[str, Any] = {"train_seconds": time.perf_counter() - t0, "steps": f.steps}
    encoder = ensemble_parameters(bb.encoder)
    for split, data in evals.items():
        if f.bow is not None:
            t1 = time.perf_counter()
            s = np.log(np.clip(f.bow.predict_proba(data.texts), 1e-30, None))
            secs = time.perf_counter() - t1
        else:
            assert f.model is not None
            s, secs = score_logits(f.model.eval(), data, args.batch_size)
        out[split], out[f"{split}_seconds"] = s.astype(np.float64), secs
        log(f"{strategy} labels {label_seed}: {split} "
            f"{metrics(s, data.labels)['accuracy']:.3f} in {secs:.1f} s")
    if f.bow is not None:
        out["own_parameters"], out["shares_base"] = f.total, False
    else:
        assert f.model is not None
        held = ensemble_parameters(f.model)
        shares = strategy in FROZEN_BASE
        out["own_parameters"], out["shares_base"] = held - encoder if shares else held, shares
    if strategy == "lora":
        assert f.model is not None
        for n, v in tl.adapter_state_dict(f.model).items():
            out[f"adapter/{n}"] = v.numpy().copy()
    log(f"{strategy} labels {label_seed}: trained in {out['train_seconds']:.0f} s "
        f"({f.steps} steps)")
    return out


def load_or_train(strategy: str, label_seed: int, bb: Any, args: Any, evals: dict[str, Any],
                  cache: dict[str, np.ndarray]) -> dict[str, Any]:
    d = Path(args.cache_dir).expanduser()
    key = (f"{args.backbone}-movie-reviews-{args.size}-labels{label_seed}-{strategy}"
           f"-steps{args.max_steps}-eval{args.eval_size}")
    path = d / f"{key}.npz"
    if path.exists():
        log(f"{strategy} labels {label_seed}: from {path}")
        with np.load(path) as z:
            return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    out = train_member(strategy, label_seed, bb, args, evals, cache)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{key}.tmp.npz"
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in out.items()}
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return out


def run_diverse(args: Any) -> list[dict[str, Any]]:
    from minitl import transfer as tl
    from minitl.recipes.text_classification import (
        RecipeConfig,
        build_model,
        load_backbone,
        load_task,
    )
    from minitl.tensor import Tensor
    from minitl.transfer.ensemble import ensemble_parameters

    where = machine()
    log(where)
    bb = load_backbone(args.backbone, log=log)
    tasks = {s: load_task("movie-reviews", bb.tokenizer, args.size, args.eval_size, seed=0,
                          eval_split=s) for s in ("validation", "test")}
    evals = {s: t.eval for s, t in tasks.items()}
    labels = {s: d.labels for s, d in evals.items()}
    encoder = ensemble_parameters(bb.encoder)
    cache: dict[str, np.ndarray] = {}
    members = {f"{st} (labels {ls})": load_or_train(st, ls, bb, args, evals, cache)
               for st, ls in member_names()}
    common = {"mode": "diverse", "size": args.size, "max_steps": args.max_steps,
              "max_length": tasks["validation"].max_length, "machine": where,
              "command": command_line(),
              "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rows: list[dict[str, Any]] = []

    def acc(s: np.ndarray, split: str) -> float:
        return float((s.argmax(-1) == labels[split]).mean())

    for name, m in members.items():
        for split in evals:
            rows.append({"row": f"member {name}", "eval_split": split,
                         "n_eval": len(labels[split]), "accuracy": acc(m[split], split),
                         "eval_seconds": m[f"{split}_seconds"],
                         "train_seconds": m["train_seconds"], "steps": m["steps"],
                         "own_parameters": m["own_parameters"],
                         "shares_pristine_encoder": bool(m["shares_base"]),
                         **common, "load_average": os.getloadavg()[0]})

    # the ensembles; every choice below reads validation scores only
    val = {n: m["validation"] for n, m in members.items()}
    label_group = [f"{LABEL_STRATEGY} (labels {s})" for s in LABEL_SEEDS]
    strategy_group = [f"{s} (labels 0)" for s in STRATEGIES]
    groups = {
        f"{LABEL_STRATEGY}, 3 label samples": label_group,
        "6 strategies, label sample 0": strategy_group,
        "5 strategies (no bow), label sample 0": [n for n in strategy_group if "bow" not in n],
        "all 8 members": list(members),
        "greedy on validation (from all 8)": greedy_selection(val, labels["validation"]),
    }
    chosen_average: dict[str, str] = {}
    for gname, names in groups.items():
        has_bow = any(n.startswith("bow") for n in names)
        # bow gives probabilities only; the greedy subset was picked under log_probs
        fixed = has_bow or gname.startswith("greedy")
        averages = ("log_probs",) if fixed else ("logits", "log_probs")
        val_acc = {a: acc(average_scores([val[n] for n in names], a), "validation")
                   for a in averages}
        average = max(averages, key=lambda a: (val_acc[a], a == "logits"))
        chosen_average[gname] = average
        best = max(names, key=lambda n: acc(val[n], "validation"))  # best member, on validation
        shares = any(members[n]["shares_base"] for n in names)
        held = encoder * shares + sum(int(members[n]["own_parameters"]) for n in names)
        for split in evals:
            ens = average_scores([members[n][split] for n in names], average)
            right, best_right = (ens.argmax(-1) == labels[split],
                                 members[best][split].argmax(-1) == labels[split])
            preds = [members[n][split].argmax(-1) for n in names]
            disagree = [float((a != b).mean()) for i, a in enumerate(preds) for b in preds[i + 1:]]
            r = {"row": f"ensemble: {gname}", "eval_split": split, "n_eval": len(labels[split]),
                 "members_in": names, "average": average,
                 "validation_accuracy_by_average": val_acc,
                 "accuracy": float(right.mean()),
                 "member_accuracies": {n: acc(members[n][split], split) for n in names},
                 "best_member_on_validation": best,
                 "best_member_accuracy": float(best_right.mean()),
                 "gain_over_best_member": float(right.mean() - best_right.mean()),
                 "ensemble_only_right": int((right & ~best_right).sum()),
                 "best_member_only_right": int((~right & best_right).sum()),
                 "mean_pairwise_disagreement": float(np.mean(disagree)) if disagree else 0.0,
                 "train_seconds": sum(members[n]["train_seconds"] for n in names),
                 "eval_seconds": sum(members[n][f"{split}_seconds"] for n in names),
                 "parameters_held": held, "megabytes_held": held * 4 / 2**20,
                 **common, "load_average": os.getloadavg()[0]}
            rows.append(r)
            log(f"{r['row']:<48} {split:<10} acc {r['accuracy']:.3f}  best member "
                f"{best} {r['best_member_accuracy']:.3f}  gain {r['gain_over_best_member']:+.3f}"
                f"  ({average})")

    # the label-sample LoRA members on one base, measured (not summed)
    base = build_model("lora", bb, 2, RecipeConfig(seed=0))
    states = [{k.split("/", 1)[1]: Tensor(v.astype(np.float32)) for k, v in members[n].items()
               if k.startswith("adapter/")} for n in label_group]
    average = chosen_average[f"{LABEL_STRATEGY}, 3 label samples"]
    ens_model = tl.AdapterEnsemble(base, states, average=average)
    for split, data in evals.items():
        out, secs = score_logits(ens_model, data, args.batch_size)
        want = average_scores([members[n][split] for n in label_group], average)
        rows.append({"row": f"ensemble: {LABEL_STRATEGY}, 3 label samples, AdapterEnsemble "
                            f"(one base, {average})", "eval_split": split,
                     "n_eval": len(labels[split]), "accuracy": acc(out, split),
                     "eval_seconds": secs, "parameters_held": ensemble_parameters(ens_model),
                     "max_abs_diff_vs_separate_members": float(np.abs(out - want).max()),
                     **common, "load_average": os.getloadavg()[0]})
        log(f"AdapterEnsemble {split}: acc {acc(out, split):.3f} in {secs:.1f} s, "
            f"{ensemble_parameters(ens_model) / 1e6:.2f} M, max |diff| vs members "
            f"{rows[-1]['max_abs_diff_vs_separate_members']:.1e}")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
