"""How long and how fast each strategy trains for a given label count, and what `auto` picks.

    p = plan("full", n_labels=100)        # Plan(steps=125, lr=3e-5, head_lr=1e-3, holdout=0)
    c = choose(n_labels=100)              # Choice("full", "why ...")

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

__all__ = ["FULL_FROM", "HEAD_LR", "HYPER", "MAX_STEPS", "MIN_STEPS", "SELECT_FROM", "Choice",
           "Plan", "choose", "plan", "train_steps"]

MIN_STEPS, MAX_STEPS = 60, 1200
PASSES_AT_100 = 20.0
SELECT_FROM = 500  # labels from which a held-out slice selects the model
HOLDOUT_SHARE, HOLDOUT_MAX = 0.1, 500
FULL_FROM = 32  # below: the frozen encoder with a trained head (auto)
HEAD_LR = 1e-3  # the head's lr while the encoder (or its adapters) train

# strategy -> peak learning rate (the top block's for discriminative, the soft prompt's
# for prompt, the head's for the strategies that only train a head)
HYPER: dict[str, float] = {
    "scratch": 2e-4, "head": 1e-3, "full": 3e-5, "gradual": 3e-5, "discriminative": 6e-5,
    "lora": 5e-4, "adapter": 5e-4, "prompt": 3e-2, "setfit": 2e-5, "setfit-lora": 5e-4,
    "self-train": 3e-5, "intermediate": 3e-5,
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
    """What `--strategy auto` runs for this many labels.

    The seeds' rule of thumb is: few labels, the frozen features; more, adapt the
    encoder. Calibrated on movie-reviews validation, 3 label samples each
    (docs/recipe_ablation.md):
      - 8 labels: head 0.721 ± 0.014, zero-shot 0.723, full 0.709 ± 0.029; with this few
        the head started at zero-shot (and held near it) is as good and far steadier;
      - 32 labels: full 0.742 ± 0.013 over head 0.727 ± 0.005, so FULL_FROM = 32;
      - 100 labels: full 0.758 ± 0.015, LoRA 0.754, SetFit 0.757 (4x the time), head 0.734.
    `n_unlabeled` is not used: self-training on the rest of the train split scored
    0.747 ± 0.021 at 100 labels (0.754 with a 5x pool, one sample), no better than full
    fine-tuning at 5-15x its time."""
    del n_unlabeled
    if n_labels <= 0:
        return Choice("zero-shot", "no labels: cosine with the label descriptions")
    if n_labels < FULL_FROM:
        return Choice("head", f"{n_labels} labels (< {FULL_FROM}): a head on the frozen "
                      "encoder, started at the zero-shot classifier and held near it; "
                      "full fine-tuning is no better with this few and varies more")
    return Choice("full", f"{n_labels} labels (>= {FULL_FROM}): full fine-tuning, "
                  f"{train_steps(n_labels)} steps planned for this label count, the head "
                  "started at the zero-shot classifier")
