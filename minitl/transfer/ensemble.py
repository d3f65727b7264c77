"""Combining models trained by transfer learning: output ensembles and weight averages.

- `LogitEnsemble`: k whole models, their logits (or log-probabilities) averaged — the
  classic ensemble (Lakshminarayanan et al., arXiv:1612.01474): k times the memory and the
  compute of one model.
- `AdapterEnsemble`: k LoRA adapters (arXiv:2106.09685) on one shared frozen base. The base
  weights are stored once; one forward runs a mixed-adapter batch of k*B rows
  (`LoRALayer.adapter_batch`): every frozen product is one GEMM over all rows, each adapter
  adds its low-rank delta on its own row block, and the modules the adapters trained in full
  (the heads, `modules_to_save`) run per block. Rows only differ after the first adapted
  layer, so the arithmetic of the frozen part is still about k times one model's; what is
  saved is memory (one base instead of k) and per-call overhead (one pass instead of k).
- `model_soup`: the (weighted) mean of state dicts of models fine-tuned from the same start
  (Wortsman et al., arXiv:2203.05482): one model's cost at inference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl.nn.container import ModuleList
from minitl.nn.module import Module
from minitl.ops.movement import cat, stack
from minitl.tensor import Tensor
from minitl.transfer.lora import LoRAConfig, LoRALayer, apply_lora, lora_factor_of

__all__ = ["AdapterEnsemble", "LogitEnsemble", "model_soup"]

AVERAGES = ("logits", "log_probs")


def _weights(weights: Sequence[float] | None, k: int) -> np.ndarray | None:
    """Normalised weights, or None for the plain mean (kept apart: the mean is exact)."""
    if weights is None:
        return None
    w = np.asarray(list(weights), np.float64)
    if w.shape != (k,):
        raise ValueError(f"weights: expected {k} weights (one per member), got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got "
                         f"{w.tolist()}")
    return w / w.sum()


def _combine(outs: Tensor, w: np.ndarray | None, average: str) -> Tensor:
    """(k, B, C) member outputs -> (B, C). Log-prob averaging is the normalised geometric
    mean of the members' distributions up to a constant per row (argmax unchanged)."""
    if average == "log_probs":
        outs = F.log_softmax(outs, dim=-1)
    if w is None:
        return outs.mean(0)
    wt = Tensor(w.astype(outs.numpy().dtype).reshape((-1,) + (1,) * (outs.ndim - 1)))
    return (outs * wt).sum(0)


def _check_average(average: str) -> str:
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    return average


class LogitEnsemble(Module):
    """The (weighted) mean of k models' outputs, every member in eval mode.

    Args:
        models: the members; each maps the same inputs to (B, C) logits.
        weights: one non-negative weight per member (normalised), None for the plain mean.
        average: "logits" (mean of logits) or "log_probs" (mean of log-softmax outputs).

    Shape:
        - Input: whatever the members take; Output: (B, C)
    """

    def __init__(self, models: Sequence[Module], weights: Sequence[float] | None = None,
                 average: str = "logits") -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("LogitEnsemble needs at least one model, got an empty list")
        self.members = ModuleList(models)
        self.member_weights = _weights(weights, len(models))
        self.average = _check_average(average)
        self.eval()

    def train(self, mode: bool = True) -> LogitEnsemble:
        # An ensemble of models whose dropout is on would average noise, not models.
        super().train(False)
        return self

    def member_outputs(self, *args: Any, **kwargs: Any) -> Tensor:
        """(k, B, C): each member's output on the same inputs."""
        outs = [m(*args, **kwargs) for m in self.members]
        shapes = [tuple(o.shape) for o in outs]
        if len(set(shapes)) > 1:
            raise ValueError(f"LogitEnsemble: members disagree on the output shape: "
                             f"{dict(enumerate(shapes))}")
        return stack(outs, 0)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return _combine(self.member_outputs(*args, **kwargs), self.member_weights, self.average)

    def extra_repr(self) -> str:
        w = None if self.member_weights is None else self.member_weights.round(3).tolist()
        return f"k={len(self.members)}, average={self.average!r}, weights={w}"


class _PerBlock(Module):
    """Module i on row block i of dim 0 (k equal blocks): one member's trained head each."""

    def __init__(self, modules: Sequence[Module]) -> None:
        super().__init__()
        self.blocks = ModuleList(list(modules))

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.blocks)
        parts = x.split(x.shape[0] // k, dim=0)
        return cat([m(p) for m, p in zip(self.blocks, parts)], 0)


def _tile(x: Any, k: int) -> Any:
    """k copies of a batch along dim 0 (Tensors and arrays); anything else passes as is."""
    if isinstance(x, Tensor):
        return cat([x] * k, 0)
    if isinstance(x, np.ndarray) and x.ndim > 0:
        return np.concatenate([x] * k, 0)
    return x


class AdapterEnsemble(Module):
    """k LoRA adapters on one shared frozen base, averaged like `LogitEnsemble`.

    Args:
        base: a model that already carries LoRA (`apply_lora`), i.e. the layers the members'
            adapters sit on; its own adapters are left alone and take no part.
        adapter_states: one `adapter_state_dict` per member (LoRA factors of one adapter
            each, under any adapter name, plus the modules it saved, e.g. its head).
        weights, average: as for `LogitEnsemble`.
        config: the members' LoRA config (default: the base's, if it has exactly one).

    Member i is adapter `member{i}`; `member_outputs` gives each member's output, equal (up
    to float rounding) to the base with adapter i alone and member i's saved modules.

    Shape:
        - Input: as the base model's (every array/Tensor argument batched on dim 0);
          Output: (B, C)
    """

    def __init__(self, base: Module, adapter_states: Sequence[Mapping[str, Any]],
                 weights: Sequence[float] | None = None, average: str = "logits",
                 config: LoRAConfig | None = None) -> None:
        super().__init__()
        states = [dict(s) for s in adapter_states]
        if not states:
            raise ValueError("AdapterEnsemble needs at least one adapter state, got none")
        if config is None:
            configs = getattr(base, "lora_config", {})
            if len(configs) != 1:
                raise ValueError(f"AdapterEnsemble: pass config= (the base carries "
                                 f"{len(configs)} LoRA configs: {sorted(configs)})")
            config = next(iter(configs.values()))
        self.base = base
        self.names = tuple(f"member{i}" for i in range(len(states)))
        self.member_weights = _weights(weights, len(states))
        self.average = _check_average(average)
        saved = list(getattr(base, "modules_to_save", []))
        heads: dict[str, list[Module]] = {s: [] for s in saved}
        for name, sd in zip(self.names, states):
            apply_lora(base, LoRAConfig(config.r, config.alpha, config.dropout, config.target),
                       adapter_name=name)
            own = base.state_dict()
            lora, rest = {}, {}
            for key, value in sd.items():
                which = lora_factor_of(key)
                if which is None:
                    rest[key] = value
                    continue
                k2 = key.replace(f".{which[0]}.{which[1]}.", f".{which[0]}.{name}.")
                if k2 not in own:
                    raise ValueError(f"AdapterEnsemble: {name}'s {key!r} has no place in "
                                     f"the base (is the LoRA config the same?)")
                lora[k2] = value
            missing = [k for k in own if (w := lora_factor_of(k)) and w[1] == name
                       and k not in lora]
            if missing:
                raise ValueError(f"AdapterEnsemble: {name} lacks {missing[:3]} "
                                 f"({len(missing)} LoRA tensors)")
            base.load_state_dict(lora, strict=False)
            for s in saved:
                head = copy.deepcopy(base.get_submodule(s))
                part = {k[len(s) + 1:]: v for k, v in rest.items() if k.startswith(s + ".")}
                head.load_state_dict(part)  # strict: a member without its head is an error
                heads[s].append(head)
            unknown = [k for k in rest if not any(k.startswith(s + ".") for s in saved)]
            if unknown:
                raise ValueError(f"AdapterEnsemble: {name}'s state has keys that are neither "
                                 f"LoRA factors nor saved modules: {unknown[:3]}")
        self.heads = {s: _PerBlock(h) for s, h in heads.items()}
        for i, blk in enumerate(self.heads.values()):
            self.add_module(f"head{i}", blk)  # so their parameters are counted and moved
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def train(self, mode: bool = True) -> AdapterEnsemble:
        super().train(False)  # members are averaged as trained: dropout off
        return self

    def _layers(self) -> list[LoRALayer]:
        return [m for m in self.base.modules() if isinstance(m, LoRALayer)]

    def member_outputs(self, *args: Any, **kwargs: Any) -> Tensor:
        """(k, B, C): member i's output, all k from one mixed-adapter pass of k*B rows."""
        k = len(self.names)
        args = tuple(_tile(a, k) for a in args)
        kwargs = {n: _tile(v, k) for n, v in kwargs.items()}
        layers = self._layers()
        swapped = {s: self.base.get_submodule(s) for s in self.heads}
        try:
            for m in layers:
                m.adapter_batch = self.names
            for s, blk in self.heads.items():
                _replace(self.base, s, blk)
            out = self.base(*args, **kwargs)  # (k*B, C)
        finally:
            for m in layers:
                m.adapter_batch = None
            for s, orig in swapped.items():
                _replace(self.base, s, orig)
        return out.reshape(k, out.shape[0] // k, *out.shape[1:])

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return _combine(self.member_outputs(*args, **kwargs), self.member_weights, self.average)

    def extra_repr(self) -> str:
        return f"k={len(self.names)}, average={self.average!r}"


def _replace(model: Module, name: str, module: Module) -> None:
    prefix, _, last = name.rpartition(".")
    model.get_submodule(prefix)._modules[last] = module


def _array(v: Any) -> np.ndarray:
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def model_soup(state_dicts: Sequence[Mapping[str, Any]],
               weights: Sequence[float] | None = None) -> dict[str, Any]:
    """The (weighted) mean of state dicts with the same keys and shapes: a uniform soup
    (arXiv:2203.05482) of models fine-tuned from one pretrained start.

    Floating tensors are averaged in float64 and cast back (so a soup of identical dicts is
    that dict, bit for bit); non-floating tensors (integer buffers, e.g. position ids) must
    be equal in every dict and are copied. Values come back as the first dict's types.

    Raises:
        ValueError: no dicts, a key missing from some dict, a shape that differs, or a
            non-floating tensor that differs between dicts.
    """
    sds = [dict(s) for s in state_dicts]
    if not sds:
        raise ValueError("model_soup needs at least one state dict, got none")
    w = _weights(weights, len(sds))
    keys = list(sds[0])
    for i, sd in enumerate(sds[1:], 1):
        missing, extra = [k for k in keys if k not in sd], [k for k in sd if k not in sds[0]]
        if missing or extra:
            raise ValueError(f"model_soup: state dict {i} lacks {missing[:5]} and has extra "
                             f"{extra[:5]} compared with state dict 0")
    out: dict[str, Any] = {}
    for key in keys:
        arrs = [_array(sd[key]) for sd in sds]
        shapes = [a.shape for a in arrs]
        if len(set(shapes)) > 1:
            raise ValueError(f"model_soup: {key!r} has different shapes: {shapes}")
        if not np.issubdtype(arrs[0].dtype, np.floating):
            if any(a.dtype != arrs[0].dtype or not np.array_equal(a, arrs[0]) for a in arrs):
                raise ValueError(f"model_soup: {key!r} is not a floating tensor "
                                 f"({arrs[0].dtype}) and differs between the dicts; it "
                                 f"cannot be averaged")
            mean = arrs[0].copy()
        else:
            acc = np.stack([a.astype(np.float64) for a in arrs])  # (k, *shape)
            mean = (acc.sum(0) / len(arrs) if w is None
                    else np.tensordot(w, acc, axes=1)).astype(arrs[0].dtype)
        out[key] = Tensor(mean) if isinstance(sds[0][key], Tensor) else mean
    return out


def ensemble_parameters(model: Module) -> int:
    """Distinct parameters and buffers held (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        seen[id(t)] = int(np.prod(t.shape))
    return sum(seen.values())

