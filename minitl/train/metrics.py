"""Evaluation metrics, in plain numpy: accuracy, macro-F1, perplexity.

Each metric exists twice: a function of whole arrays (`accuracy(preds, labels)`) and a
streaming class (`Accuracy()`) that the Trainer feeds batch by batch through
`update(logits, labels, loss)` and reads once with `compute()`. Labels equal to
`ignore_index` (-100, the padding / unmasked label of the pretraining objectives) are
left out everywhere.

Macro-F1 follows the usual definition (scikit-learn's `f1_score(average="macro")`): the
unweighted mean over classes of F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), over the classes
that occur in the labels or the predictions; a class with no TP, FP or FN scores 0.
Perplexity is exp of the mean loss per scored token.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Accuracy", "MacroF1", "Metric", "Perplexity", "accuracy", "confusion_matrix",
           "get_metric", "macro_f1", "perplexity"]


def _np(x: Any) -> np.ndarray:
    data = getattr(x, "data", x)  # a Tensor's array
    if not isinstance(data, np.ndarray) and hasattr(data, "get"):
        data = data.get()  # CuPy -> host
    return np.asarray(data)


def _predictions(preds_or_logits: Any, labels: np.ndarray) -> np.ndarray:
    """Class ids: logits (one more dim than the labels) are reduced with argmax."""
    p = _np(preds_or_logits)
    if p.ndim == labels.ndim + 1:
        p = p.argmax(axis=-1)
    if p.shape != labels.shape:
        raise ValueError(f"predictions of shape {p.shape} do not match labels of shape "
                         f"{labels.shape}")
    return p.astype(np.int64)


def _kept(preds_or_logits: Any, labels: Any, ignore_index: int
          ) -> tuple[np.ndarray, np.ndarray]:
    y = _np(labels).astype(np.int64)
    p = _predictions(preds_or_logits, y)
    keep = y != ignore_index
    return p[keep], y[keep]


def accuracy(preds_or_logits: Any, labels: Any, ignore_index: int = -100) -> float:
    """Share of predictions equal to their label (NaN when nothing is scored)."""
    p, y = _kept(preds_or_logits, labels, ignore_index)
    return float((p == y).mean()) if y.size else math.nan


def confusion_matrix(preds: Any, labels: Any, num_classes: int | None = None,
                     ignore_index: int = -100) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    p, y = _kept(preds, labels, ignore_index)
    if num_classes is None:
        num_classes = int(max(p.max(initial=-1), y.max(initial=-1))) + 1
    if y.size and (min(p.min(), y.min()) < 0 or max(p.max(), y.max()) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def _macro_f1_from_cm(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    if not present.any():
        return math.nan
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def macro_f1(preds_or_logits: Any, labels: Any, num_classes: int | None = None,
             ignore_index: int = -100) -> float:
    """Unweighted mean of the per-class F1 over the classes present in labels or
    predictions."""
    return _macro_f1_from_cm(confusion_matrix(preds_or_logits, labels, num_classes,
                                              ignore_index))


def perplexity(mean_loss: float) -> float:
    """exp(mean cross entropy per token), in nats; inf when that overflows."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf


def _token_nll_sum(logits: np.ndarray, labels: np.ndarray, ignore_index: int
                   ) -> tuple[float, int]:
    """Summed -log softmax(logits)[label] over scored positions, and their count."""
    flat = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    y = labels.reshape(-1).astype(np.int64)
    keep = y != ignore_index
    flat, y = flat[keep], y[keep]
    if not y.size:
        return 0.0, 0
    m = flat.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(flat - m).sum(axis=1))
    return float((lse - flat[np.arange(len(y)), y]).sum()), int(y.size)


# ---- streaming versions for the Trainer ---------------------------------------------------


class Metric:
    """Accumulates over batches: `reset()`, then `update(...)` per batch, then `compute()`.

    `name` is the key in the Trainer's results (prefixed with `eval_`).
    """

    name = "metric"

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, logits: Any, labels: Any, loss: float | None = None) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Accuracy(Metric):
    name = "accuracy"

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits: Any, labels: Any, loss: float | None = None) -> None:
        p, y = _kept(logits, labels, self.ignore_index)
        self.correct += int((p == y).sum())
        self.total += int(y.size)

    def compute(self) -> float:
        return self.correct / self.total if self.total else math.nan


class MacroF1(Metric):
    name = "macro_f1"

    def __init__(self, num_classes: int | None = None, ignore_index: int = -100) -> None:
        self.num_classes = num_classes
        super().__init__(ignore_index)

    def reset(self) -> None:
        self.cm = np.zeros((0, 0), dtype=np.int64)

    def update(self, logits: Any, labels: Any, loss: float | None = None) -> None:
        p, y = _kept(logits, labels, self.ignore_index)
        seen = int(max(p.max(initial=-1), y.max(initial=-1))) + 1
        size = max(self.cm.shape[0], seen, self.num_classes or 0)
        if size > self.cm.shape[0]:  # grow as new classes appear
            grown = np.zeros((size, size), dtype=np.int64)
            grown[:self.cm.shape[0], :self.cm.shape[0]] = self.cm
            self.cm = grown
        np.add.at(self.cm, (y, p), 1)

    def compute(self) -> float:
        return _macro_f1_from_cm(self.cm)


class Perplexity(Metric):
    """exp(mean token loss). With logits, the token losses are recomputed exactly from
    them; without (a model that returns only its loss), the batch loss is weighted by the
    number of scored labels."""

    name = "perplexity"

    def reset(self) -> None:
        self.nll = 0.0
        self.tokens = 0

    def update(self, logits: Any, labels: Any, loss: float | None = None) -> None:
        if logits is not None and labels is not None:
            nll, count = _token_nll_sum(_np(logits), _np(labels), self.ignore_index)
        elif loss is not None:
            count = 1 if labels is None else int((_np(labels) != self.ignore_index).sum())
            nll = float(loss) * count
        else:
            raise ValueError("Perplexity needs logits and labels, or the batch loss")
        self.nll += nll
        self.tokens += count

    def compute(self) -> float:
        return perplexity(self.nll / self.tokens) if self.tokens else math.nan


_BY_NAME: dict[str, type[Metric]] = {"accuracy": Accuracy, "acc": Accuracy,
                                     "macro_f1": MacroF1, "f1": MacroF1,
                                     "perplexity": Perplexity, "ppl": Perplexity}


def get_metric(metric: str | Metric) -> Metric:
    """A Metric instance from a name ("accuracy", "macro_f1", "perplexity") or itself."""
    if isinstance(metric, Metric):
        return metric
    try:
        return _BY_NAME[metric]()
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(_BY_NAME)}") from None
