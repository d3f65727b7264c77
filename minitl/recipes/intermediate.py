"""Intermediate-task transfer: first fine-tune the encoder on labelled data of related tasks,
then on the few labels of the target (Phang et al. 2018, arXiv:1811.01088, "STILTs").

    inter = intermediate_model(bb, ["tweets", "amazon-reviews", "nyt-snippets"])
    fitted, r = run_strategy("full", inter.backbone, task, head_from=inter.model)

For movie-review sentiment, the other sentiment sets of the same collection (tweets,
Amazon product reviews, New York Times sentences; the same negative/positive labels) give
10,200 labelled sentences and not one movie review. The intermediate model is also a
classifier of the target's labels already, applied as it is (0 target labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minitl.data import load_dataset
from minitl.recipes.sentence_model import Backbone, SentenceClassifier
from minitl.recipes.text_classification import RecipeConfig, fit
from minitl.recipes.text_data import EncodedText, encode_texts

__all__ = ["Intermediate", "intermediate_model", "related_sentiment_sets"]

SENTIMENT_SETS = ("movie-reviews", "tweets", "amazon-reviews", "nyt-snippets")
STEPS = 640  # one pass over the 10,200 sentences of the three other sets at batch 16
_CACHE: dict[tuple[str, tuple[str, ...], int, int], Intermediate] = {}


@dataclass
class Intermediate:
    backbone: Backbone  # the intermediate encoder, to start the target's fine-tuning from
    model: SentenceClassifier  # encoder + its head (a classifier of the same labels)
    datasets: tuple[str, ...]
    n_labels: int
    steps: int


def related_sentiment_sets(target: str) -> list[str]:
    """The sentiment sets of the same collection other than `target`."""
    if target not in SENTIMENT_SETS:
        raise ValueError(f"no related sentiment sets known for {target!r}; known: "
                         f"{', '.join(SENTIMENT_SETS)}")
    return [d for d in SENTIMENT_SETS if d != target]


def intermediate_model(backbone: Backbone, datasets: Sequence[str], max_length: int,
                       cfg: RecipeConfig | None = None, *, cache: bool = True
                       ) -> Intermediate:
    """Full fine-tuning (STEPS steps, zero-shot head) on the train splits of `datasets`
    together; they must share label names. Kept for the process (per backbone, sets,
    length and seed), so every label count and seed of a sweep starts from one model."""
    cfg = cfg or RecipeConfig(steps=STEPS, select=False, progress=False)
    key = (backbone.digest(), tuple(datasets), max_length, cfg.seed)
    if cache and key in _CACHE:
        return _CACHE[key]
    parts: list[EncodedText] = []
    names: tuple[str, ...] | None = None
    for d in datasets:
        tr = load_dataset(d, split="train")
        if names is not None and tuple(tr.label_names) != names:
            raise ValueError(f"{d} has labels {tr.label_names}, the others {names}")
        names = tuple(tr.label_names)
        parts.append(encode_texts(backbone.tokenizer, tr.texts, tr.labels, max_length))
    if names is None:
        raise ValueError("intermediate_model needs at least one dataset")
    data = EncodedText([i for p in parts for i in p.ids],
                       np.concatenate([p.labels for p in parts]),
                       [t for p in parts for t in p.texts])
    fitted = fit("full", backbone, data, cfg, dataset=datasets[0], label_names=names,
                 max_length=max_length)
    assert fitted.model is not None
    fitted.model.eval()
    inter = Backbone(f"{backbone.name}+{'+'.join(datasets)}", fitted.model.bert,
                     backbone.tokenizer)
    out = Intermediate(inter, fitted.model, tuple(datasets), len(data), fitted.steps)
    if cache:
        _CACHE[key] = out
    return out
