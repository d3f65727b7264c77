"""Penalties that hold fine-tuned weights near the pretrained ones, against forgetting.

- L2-SP (Li et al., arXiv:1802.01483): weight decay towards the starting point,
  `alpha/2 * sum ||w - w0||^2` over the backbone, plus optionally `beta/2 * ||w||^2` on
  the new head (which has no starting point).
- EWC (Kirkpatrick et al., arXiv:1612.00796): the same pull, weighted per parameter by
  the diagonal Fisher information of the source task, `lam/2 * sum F (w - w*)^2`, so
  weights the source task depends on move least.

Both return the penalty as a minitl Tensor in the autograd graph: add it to the loss.

The Fisher here is the empirical diagonal Fisher, computed per batch: for each batch b of
`fisher_data`, g_b = d loss_fn(model, b) / d theta with loss_fn the mean negative
log-likelihood of the batch, and F = mean_b g_b^2. With batches of one example this is
the per-example empirical Fisher of the paper; with larger batches it is that of the
batch-mean gradient (smaller by up to the batch size, which `lam` absorbs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import minitl.nn.functional as F
from minitl.autograd_state import enable_grad
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor
from minitl.transfer.freeze import matches

__all__ = ["EWC", "L2SP", "default_nll"]


def default_nll(model: Module, batch: Any) -> Tensor:
    """Mean negative log-likelihood of a classification batch: `(inputs, labels)` or a
    dict with "labels" (the rest goes to the model as keyword arguments)."""
    if isinstance(batch, dict):
        kwargs = {k: v for k, v in batch.items() if k != "labels"}
        logits, labels = model(**kwargs), batch["labels"]
    else:
        logits, labels = model(batch[0]), batch[1]
    labels = labels if isinstance(labels, Tensor) else Tensor(labels)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _select(model: Module, params: Sequence[str], exclude: Sequence[str]
            ) -> list[tuple[str, Parameter]]:
    return [(n, p) for n, p in model.named_parameters()
            if matches(n, params) and not matches(n, exclude)]


def _const_like(arr: Any, p: Parameter) -> Tensor:
    return Tensor(arr.astype(p.dtype, copy=True))


class L2SP:
    """L2-SP: `alpha/2 * sum_backbone ||w - w0||^2 + beta/2 * sum_head ||w||^2`, with w0 the
    weights when this object is built.

    Args:
        model: the model at its pretrained starting point.
        alpha: strength of the pull towards w0.
        head: parameter-name globs of the new head (decayed towards 0 with `beta`).
        beta: plain L2 strength on the head (0 leaves it alone).
        params: globs of the parameters anchored (default: all but the head).
    """

    def __init__(self, model: Module, alpha: float, head: Sequence[str] = (),
                 beta: float = 0.0, params: Sequence[str] = ("*",)) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.anchored = _select(model, params, head)
        self.anchors = [_const_like(p.data, p) for _, p in self.anchored]
        self.head = [(n, p) for n, p in model.named_parameters() if matches(n, head)]

    def penalty(self) -> Tensor:
        terms: list[Tensor] = []
        for (_, p), w0 in zip(self.anchored, self.anchors):
            terms.append(((p - w0) ** 2).sum() * (self.alpha / 2))
        if self.beta:
            terms += [(p**2).sum() * (self.beta / 2) for _, p in self.head]
        if not terms:
            raise ValueError("L2SP: no parameters selected")
        return _total(terms)

    __call__ = penalty


def _total(terms: list[Tensor]) -> Tensor:
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


class EWC:
    """Elastic weight consolidation: `lam/2 * sum_i F_i (theta_i - theta*_i)^2`.

    On construction it computes the diagonal Fisher F from `fisher_data` (see the module
    docstring: per batch, mean of squared gradients of the mean NLL) with the model in
    eval mode, and stores the anchors theta* = the current weights. Parameters' `.grad`
    are cleared on the way out.

    Args:
        model: the model trained on the source task.
        fisher_data: iterable of source-task batches.
        lam: penalty strength.
        loss_fn: `loss_fn(model, batch) -> scalar Tensor`, the batch's mean negative
            log-likelihood (default: cross-entropy of `(inputs, labels)` batches).
        params: globs of the parameters constrained (default: all).
        exclude: globs left out (e.g. a head that did not exist on the source task).
    """

    def __init__(self, model: Module, fisher_data: Iterable[Any], lam: float,
                 loss_fn: Callable[[Module, Any], Tensor] | None = None,
                 params: Sequence[str] = ("*",), exclude: Sequence[str] = ()) -> None:
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = float(lam)
        self.loss_fn = loss_fn or default_nll
        self.params = _select(model, params, exclude)
        if not self.params:
            raise ValueError("EWC: no parameters selected")
        self.anchors = [_const_like(p.data, p) for _, p in self.params]
        self.fisher = self._fisher(model, fisher_data)

    def _fisher(self, model: Module, data: Iterable[Any]) -> list[Tensor]:
        sums = [p.data * 0 for _, p in self.params]
        flags = [p.requires_grad for _, p in self.params]
        was_training = model.training
        n = 0
        try:
            model.eval()
            for _, p in self.params:
                p.requires_grad = True
                p.grad = None
            for batch in data:
                with enable_grad():
                    loss = self.loss_fn(model, batch)
                    loss.backward()
                for s, (_, p) in zip(sums, self.params):
                    if p.grad is not None:
                        s += p.grad.data * p.grad.data
                    p.grad = None
                n += 1
        finally:
            model.train(was_training)
            for (_, p), f in zip(self.params, flags):
                p.requires_grad = f
                p.grad = None
        if n == 0:
            raise ValueError("EWC: fisher_data yielded no batches")
        return [_const_like(s / n, p) for s, (_, p) in zip(sums, self.params)]

    def penalty(self) -> Tensor:
        terms = [(f * (p - a) ** 2).sum() for (_, p), a, f
                 in zip(self.params, self.anchors, self.fisher)]
        return _total(terms) * (self.lam / 2)

    __call__ = penalty

    def state_dict(self) -> dict[str, Tensor]:
        """Fisher and anchors by parameter name (`fisher.<name>`, `anchor.<name>`), for
        `mt.save`."""
        out = {f"fisher.{n}": f for (n, _), f in zip(self.params, self.fisher)}
        out.update({f"anchor.{n}": a for (n, _), a in zip(self.params, self.anchors)})
        return out

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for i, (n, p) in enumerate(self.params):
            for key, store in ((f"fisher.{n}", self.fisher), (f"anchor.{n}", self.anchors)):
                v = sd[key]
                store[i] = _const_like(v.data if isinstance(v, Tensor) else v, p)
