"""LoRA: low-rank adaptation of frozen Linear and Conv2d layers (Hu et al., arXiv:2106.09685),
and of quantized QuantLinear layers (QLoRA, arXiv:2305.14314), laid out as peft lays it out
(config / layer / injection).

For a frozen weight W (out, in) a LoRA layer learns A (r, in) and B (out, r) and computes

    y = x W^T + b + scale * dropout(x) A^T B^T,        scale = alpha / r

A starts like a Linear weight (kaiming-uniform, a = sqrt(5)) and B at zero, so the adapted
model equals the base model at initialisation. Without dropout the forward is the fused
`F.lora_linear` op (the update B A is never formed). `merge_lora` adds scale * B A into W
(inference costs nothing extra), `unmerge_lora` subtracts it again.

Names follow peft: the replaced layer keeps `weight` and `bias` under their old names (the
base checkpoint still loads into it) and adds `lora_A.<adapter>.weight` and
`lora_B.<adapter>.weight`. For a Conv2d, A is a convolution with the base kernel, stride,
padding and dilation and r output channels, and B a 1x1 convolution, so B A is again a
kernel of the base's shape and merges exactly. Several named adapters can live on one
model; exactly one is active (used and trained) at a time, except in a mixed-adapter batch
(`adapter_batch`, used by minitl.transfer.ensemble): k adapters on k row blocks of one batch,
the frozen product done once over all rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import minitl.nn.functional as F
from minitl.autograd_state import increment_version, no_grad
from minitl.backend import array_module
from minitl.io.patterns import glob_match
from minitl.nn.container import ModuleDict
from minitl.nn.conv import Conv2d
from minitl.nn.linear import Linear
from minitl.nn.module import Module, _IncompatibleKeys
from minitl.nn.parameter import Parameter
from minitl.nn.quantized import QuantLinear
from minitl.ops.movement import cat
from minitl.ops.quant import quant_linear, quant_lora_linear
from minitl.tensor import Tensor

__all__ = ["LoRAConfig", "LoRAConv2d", "LoRALayer", "LoRALinear", "LoRAQuantLinear",
           "adapter_state_dict", "apply_lora", "load_adapter_state_dict", "lora_factor_of",
           "lora_layers", "lora_parameters", "mark_modules_to_save", "merge_and_unload",
           "merge_lora", "set_adapter", "unmerge_lora"]


@dataclass
class LoRAConfig:
    """What to adapt and how. peft's `LoraConfig` names are accepted beside minitl's shorter
    ones and mean the same: `target_modules` = `target`, `lora_alpha` = `alpha`,
    `lora_dropout` = `dropout` (give either name of a pair, or both with one value; the
    settings live under minitl's names).

    `target` and `modules_to_save` are glob patterns on module names; a pattern without a
    wildcard prefix also matches as a suffix ("query" matches "encoder.layer.0.attention.
    self.query"), as peft's `target_modules` do.
    """

    r: int = 8  # rank of the update B A
    alpha: float = 16  # scale = alpha / r
    dropout: float = 0.0  # dropout on the LoRA branch input; 0 takes the fused kernel
    target: tuple[str, ...] = ("*.query", "*.value")  # nn.Linear / nn.Conv2d module names
    modules_to_save: tuple[str, ...] = field(default=())  # trained in full and saved (heads)
    # peft's names for target, alpha and dropout: read at construction into their twins, then
    # None again, so that dataclasses.replace(cfg, alpha=...) does not meet a stale copy
    target_modules: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    lora_alpha: float | None = field(default=None, repr=False, compare=False)
    lora_dropout: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        defaults = LoRAConfig.__dataclass_fields__
        for ours, peft in (("target", "target_modules"), ("alpha", "lora_alpha"),
                           ("dropout", "lora_dropout")):
            theirs = getattr(self, peft)
            if theirs is None:
                continue
            mine, default = getattr(self, ours), defaults[ours].default
            if mine != default and _as_tuple(mine) != _as_tuple(theirs):
                raise ValueError(f"LoRAConfig: {ours}={mine!r} and {peft}={theirs!r} name the "
                                 f"same setting; give one")
            setattr(self, ours, theirs)
            setattr(self, peft, None)
        self.target = _as_tuple(self.target)
        self.modules_to_save = _as_tuple(self.modules_to_save)
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoRAConfig: r must be a positive int, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRAConfig: alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target:
            raise ValueError("LoRAConfig: target must name at least one module pattern")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def _as_tuple(v: Any) -> Any:
    return (v,) if isinstance(v, str) else tuple(v) if isinstance(v, (list, tuple)) else v


def module_matches(name: str, patterns: Sequence[str]) -> bool:
    """Glob match on a module name; a pattern also matches any name ending in
    "." + pattern (peft's suffix rule). Globs cannot backtrack without bound
    (minitl.io.patterns.glob_match: fnmatch's atomic groups, patterns of bounded length)."""
    return any(glob_match(name, p) or glob_match(name, "*." + p) for p in patterns)


# ---- layers ---------------------------------------------------------------------------------

class LoRALayer(Module):
    """Shared state of the LoRA layers: the frozen base `weight`/`bias` (the very Parameter
    objects of the replaced layer), `lora_A`/`lora_B` per adapter, which adapter is active
    and which are merged into the weight."""

    def __init__(self, base: Module) -> None:
        super().__init__()
        self._adopt(base)
        self.lora_A = ModuleDict()
        self.lora_B = ModuleDict()
        self.r: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self.lora_dropout: dict[str, float] = {}
        self.active_adapter: str | None = None
        self.merged_adapters: list[str] = []
        self.weight_is_tied = False  # set by apply_lora: merging would change other users
        # Mixed-adapter batch: row block i of the input (dim 0 cut in k equal parts) gets
        # adapter_batch[i]; the frozen weight multiplies all k*B rows in one product.
        self.adapter_batch: tuple[str, ...] | None = None

    def _adopt(self, base: Module) -> None:
        """Take over the frozen base's tensors under their own names."""
        self.weight: Parameter = base.weight
        if base.bias is not None:
            self.bias = base.bias
        else:
            self.register_parameter("bias", None)

    def _make_factors(self, r: int) -> tuple[Module, Module]:
        raise NotImplementedError

    def add_adapter(self, name: str, r: int, alpha: float, dropout: float) -> None:
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        a, b = self._make_factors(r)
        with no_grad():
            b.weight.data[...] = 0  # B = 0: the adapted layer starts equal to the base
        self.lora_A[name], self.lora_B[name] = a, b
        self.r[name], self.scaling[name], self.lora_dropout[name] = r, alpha / r, dropout

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def delta_weight(self, name: str) -> Any:
        """scale * B A as an array of the base weight's shape."""
        raise NotImplementedError

    def merge(self) -> None:
        """W += scale * B A for the active adapter (no-op if merged or none is active)."""
        name = self.active_adapter
        if name is None or name in self.merged_adapters:
            return
        if self.weight_is_tied:
            raise RuntimeError("cannot merge LoRA into a tied weight (it is shared with "
                               "another module, which would change too)")
        self.weight.data += self.delta_weight(name)
        increment_version(self.weight)  # a graph that saved W before the merge must not use it
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """W -= scale * B A for every merged adapter, newest first."""
        while self.merged_adapters:
            self.weight.data -= self.delta_weight(self.merged_adapters.pop())
            increment_version(self.weight)

    def lora_delta(self, x: Tensor, name: str) -> Tensor:
        """scale * B(A(dropout(x))) of adapter `name`: what it adds to the frozen output."""
        p = self.lora_dropout[name]
        h = F.dropout(x, p, training=self.training) if p > 0 else x
        return self.lora_B[name](self.lora_A[name](h)) * self.scaling[name]

    def _batch_forward(self, x: Tensor, frozen: Tensor) -> Tensor:
        """`frozen` (the base layer on all k*B rows) plus adapter i's delta on row block i."""
        names = self.adapter_batch
        assert names is not None
        if self.merged:
            raise RuntimeError("adapter_batch: unmerge_lora(model) first (a merged adapter "
                               "would be added to every row block)")
        k = len(names)
        if x.shape[0] % k:
            raise ValueError(f"adapter_batch of {k} adapters needs a batch divisible by {k}, "
                             f"got {x.shape[0]} rows")
        blocks = x.split(x.shape[0] // k, dim=0)
        return frozen + cat([self.lora_delta(xb, n) for xb, n in zip(blocks, names)], 0)

    def _branch_active(self) -> str | None:
        name = self.active_adapter
        return None if name is None or self.merged or name not in self.lora_A else name

    def extra_repr(self) -> str:
        return (f"active={self.active_adapter!r}, r={self.r}, "
                f"merged={self.merged_adapters or False}")


class LoRALinear(LoRALayer):
    """`y = x W^T + b + scale * dropout(x) A^T B^T` over a frozen nn.Linear.

    Shape:
        - Input: (*, in_features); Output: (*, out_features)
        - lora_A.<name>.weight: (r, in_features); lora_B.<name>.weight: (out_features, r)
    """

    def __init__(self, base: Linear) -> None:
        super().__init__(base)
        self.in_features, self.out_features = base.in_features, base.out_features

    def _make_factors(self, r: int) -> tuple[Module, Module]:
        dev, dt = str(self.weight.device), self.weight.dtype
        return (Linear(self.in_features, r, bias=False, device=dev, dtype=dt),  # kaiming, a=sqrt(5)
                Linear(r, self.out_features, bias=False, device=dev, dtype=dt))

    def delta_weight(self, name: str) -> Any:
        a, b = self.lora_A[name].weight.data, self.lora_B[name].weight.data
        return (self.scaling[name] * (b @ a)).astype(self.weight.dtype, copy=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.adapter_batch is not None:
            return self._batch_forward(x, F.linear(x, self.weight, self.bias))
        name = self._branch_active()
        if name is None:
            return F.linear(x, self.weight, self.bias)
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        p, s = self.lora_dropout[name], self.scaling[name]
        if p == 0.0 or not self.training:
            return F.lora_linear(x, self.weight, self.bias, a, b, s)
        h = F.linear(F.linear(F.dropout(x, p, training=True), a), b)  # (*, out)
        return F.linear(x, self.weight, self.bias) + h * s


class LoRAQuantLinear(LoRALayer):
    """QLoRA (Dettmers et al., arXiv:2305.14314): `y = x W^T + b + scale * dropout(x) A^T B^T`
    over a frozen QuantLinear, whose W stays in its 4/8-bit blocks (`qweight`, the very buffer
    of the replaced layer) and runs on the dequantize-GEMM; A and B are float32. Merging is
    refused: W + scale B A has no exact form in the blocks.
    """

    def __init__(self, base: QuantLinear) -> None:
        super().__init__(base)
        self.in_features, self.out_features = base.in_features, base.out_features

    def _adopt(self, base: Module) -> None:
        self.register_buffer("qweight", base.qweight)
        self.qtype = base.qtype
        if base.bias is not None:
            self.bias = base.bias
        else:
            self.register_parameter("bias", None)

    def _make_factors(self, r: int) -> tuple[Module, Module]:
        dev = str(self.qweight.device)
        return (Linear(self.in_features, r, bias=False, device=dev),  # kaiming, a=sqrt(5)
                Linear(r, self.out_features, bias=False, device=dev))

    def delta_weight(self, name: str) -> Any:
        a, b = self.lora_A[name].weight.data, self.lora_B[name].weight.data
        return self.scaling[name] * (b @ a)

    def merge(self) -> None:
        if self._branch_active() is not None:
            raise RuntimeError("cannot merge LoRA into a quantized weight (W + scale B A has "
                               "no exact form in its blocks); keep the adapter separate, or "
                               "load the base in float32 to merge")

    def forward(self, x: Tensor) -> Tensor:
        if self.adapter_batch is not None:
            return self._batch_forward(x, quant_linear(x, self.qweight, self.qtype, self.bias))
        name = self._branch_active()
        if name is None:
            return quant_linear(x, self.qweight, self.qtype, self.bias)
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        p, s = self.lora_dropout[name], self.scaling[name]
        if p == 0.0 or not self.training:
            return quant_lora_linear(x, self.qweight, self.qtype, self.bias, a, b, s)
        h = F.linear(F.linear(F.dropout(x, p, training=True), a), b)  # (*, out)
        return quant_linear(x, self.qweight, self.qtype, self.bias) + h * s


class LoRAConv2d(LoRALayer):
    """`y = conv(x, W) + b + scale * conv1x1(conv(dropout(x), A), B)` over a frozen Conv2d.

    A has the base's kernel, stride, padding and dilation with r output channels, B is a
    1x1 convolution from r to out channels; B A (out, in, kh, kw) merges into W exactly.
    """

    def __init__(self, base: Conv2d) -> None:
        if base.groups != 1:
            raise ValueError("LoRA on grouped convolutions is not supported (groups != 1)")
        super().__init__(base)
        self.in_channels, self.out_channels = base.in_channels, base.out_channels
        self.kernel_size, self.stride = base.kernel_size, base.stride
        self.padding, self.dilation, self.groups = base.padding, base.dilation, 1

    def _make_factors(self, r: int) -> tuple[Module, Module]:
        dev, dt = str(self.weight.device), self.weight.dtype
        a = Conv2d(self.in_channels, r, self.kernel_size, self.stride, self.padding,
                   self.dilation, bias=False, device=dev, dtype=dt)
        return a, Conv2d(r, self.out_channels, 1, bias=False, device=dev, dtype=dt)

    def delta_weight(self, name: str) -> Any:
        a = self.lora_A[name].weight.data  # (r, in, kh, kw)
        b = self.lora_B[name].weight.data[:, :, 0, 0]  # (out, r)
        xp = array_module(a)
        d = xp.einsum("or,rikl->oikl", b, a) * self.scaling[name]
        return d.astype(self.weight.dtype, copy=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        if self.adapter_batch is not None:
            return self._batch_forward(x, y)
        name = self._branch_active()
        return y if name is None else y + self.lora_delta(x, name)


# ---- injection --------------------------------------------------------------------------

def lora_layers(model: Module) -> list[tuple[str, LoRALayer]]:
    """(name, layer) of every LoRA layer in `model`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALayer)]


def _set_child(model: Module, name: str, module: Module) -> None:
    prefix, _, last = name.rpartition(".")
    model.get_submodule(prefix)._modules[last] = module


def lora_factor_of(name: str) -> tuple[str, str] | None:
    """("lora_A"|"lora_B", adapter name) for the name of a LoRA factor's parameter
    ("...query.lora_A.default.weight"), else None."""
    parts = name.split(".")
    for i, c in enumerate(parts[:-1]):
        if c in ("lora_A", "lora_B"):
            return c, parts[i + 1]
    return None


def mark_modules_to_save(model: Module, patterns: Sequence[str]) -> list[str]:
    """Record the modules matching `patterns` (module-name globs, peft suffix rule) as
    trained in full and saved by `adapter_state_dict`; make them trainable."""
    names = [n for n, _ in model.named_modules() if n and module_matches(n, patterns)]
    saved: list[str] = list(getattr(model, "modules_to_save", []))
    for n in names:
        if n not in saved:
            saved.append(n)
        for p in model.get_submodule(n).parameters():
            p.requires_grad = True
    model.modules_to_save = saved
    return names


def _refresh_trainable(model: Module) -> None:
    """Only the active adapter's factors and the saved modules train."""
    layers = lora_layers(model)
    active = {m.active_adapter for _, m in layers} - {None}
    for name, p in model.named_parameters():
        which = lora_factor_of(name)
        if which is not None:
            p.requires_grad = which[1] in active
        elif _is_adapter_key(name, None):
            continue  # bottleneck adapters / soft prompts keep their own state
        elif not any(name.startswith(s + ".") for s in getattr(model, "modules_to_save", [])):
            p.requires_grad = False
        if not p.requires_grad:
            p.grad = None


def apply_lora(model: Module, cfg: LoRAConfig, adapter_name: str = "default") -> Module:
    """Put LoRA adapter `adapter_name` on every nn.Linear / nn.Conv2d whose name matches
    `cfg.target`, in place, and freeze all but the LoRA factors and `cfg.modules_to_save`.

    The first adapter on a model becomes active; later ones are added inactive (and
    frozen) until `set_adapter` selects them, as with peft's `add_adapter`.

    Returns:
        The model (changed in place).

    Raises:
        ValueError: no supported layer matched, or the adapter already exists.
    """
    if "." in adapter_name or not adapter_name:
        raise ValueError(f"adapter_name must be a non-empty name without '.', got "
                         f"{adapter_name!r}")
    had_lora = bool(lora_layers(model))
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    lora_prefixes = [n + "." for n, _ in lora_layers(model)]
    hit = 0
    for name, m in list(model.named_modules()):
        if not name or not module_matches(name, cfg.target):
            continue
        if any(name.startswith(p) for p in lora_prefixes):
            continue  # the factors of an existing LoRA layer are not targets
        if isinstance(m, LoRALayer):
            layer = m
        elif isinstance(m, Linear):
            layer = LoRALinear(m)
        elif isinstance(m, Conv2d):
            layer = LoRAConv2d(m)
        elif isinstance(m, QuantLinear):
            layer = LoRAQuantLinear(m)
        else:
            continue  # a container that happens to match, e.g. "*.output"
        layer.add_adapter(adapter_name, cfg.r, cfg.alpha, cfg.dropout)
        layer.weight_is_tied = uses.get(id(getattr(layer, "weight", None)), 0) > 1
        if layer is not m:
            layer.train(m.training)
            _set_child(model, name, layer)
        if layer.active_adapter is None and not had_lora:
            layer.active_adapter = adapter_name
        hit += 1
    if hit == 0:
        raise ValueError(f"apply_lora: no nn.Linear, nn.Conv2d or QuantLinear matched "
                         f"{cfg.target}")
    configs = dict(getattr(model, "lora_config", {}))
    configs[adapter_name] = cfg
    model.lora_config = configs
    if cfg.modules_to_save:
        mark_modules_to_save(model, cfg.modules_to_save)
    _refresh_trainable(model)
    return model


def set_adapter(model: Module, adapter_name: str | None) -> None:
    """Make `adapter_name` the active (used and trained) adapter on every LoRA layer that
    has it; None switches LoRA off (the base model). Layers must not be merged."""
    layers = lora_layers(model)
    if adapter_name is not None and not any(adapter_name in m.lora_A for _, m in layers):
        raise ValueError(f"no LoRA adapter named {adapter_name!r}; have "
                         f"{sorted({a for _, m in layers for a in m.lora_A})}")
    if any(m.merged for _, m in layers):
        raise RuntimeError("set_adapter: unmerge_lora(model) first")
    for _, m in layers:
        m.active_adapter = adapter_name if adapter_name in m.lora_A else None
    _refresh_trainable(model)


def merge_lora(model: Module) -> None:
    """Fold the active adapter into each base weight: W += scale * B A."""
    with no_grad():
        for _, m in lora_layers(model):
            m.merge()


def unmerge_lora(model: Module) -> None:
    """Undo `merge_lora`: W -= scale * B A."""
    with no_grad():
        for _, m in lora_layers(model):
            m.unmerge()


def merge_and_unload(model: Module) -> Module:
    """Merge the active adapter and put plain nn.Linear / nn.Conv2d layers (holding the
    merged weight Parameters) back in place of the LoRA layers. Returns the model."""
    merge_lora(model)
    for name, m in lora_layers(model):
        if isinstance(m, LoRAQuantLinear):
            raise RuntimeError(f"merge_and_unload: {name} holds a quantized base weight; "
                               "LoRA cannot be merged into its blocks")
        if isinstance(m, LoRALinear):
            plain: Module = Linear(m.in_features, m.out_features, bias=m.bias is not None)
        else:
            assert isinstance(m, LoRAConv2d)
            plain = Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                           m.dilation, bias=m.bias is not None)
        plain.weight = m.weight
        if m.bias is not None:
            plain.bias = m.bias
        plain.train(m.training)
        _set_child(model, name, plain)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def lora_parameters(model: Module, adapter_name: str | None = None) -> list[Parameter]:
    """The LoRA factors (of one adapter, or of all), e.g. for an optimizer."""
    return [p for n, p in model.named_parameters()
            if (w := lora_factor_of(n)) is not None and adapter_name in (None, w[1])]


# ---- adapter-only checkpoints ---------------------------------------------------------------

def _is_adapter_key(key: str, adapter_name: str | None) -> bool:
    which = lora_factor_of(key)
    if which is not None:
        return adapter_name is None or which[1] == adapter_name
    parts = key.split(".")
    return any(c in ("adapter", "soft_prompt") for c in parts[:-1])


def adapter_state_dict(model: Module, adapter_name: str | None = None,
                       peft_format: bool = False) -> dict[str, Tensor]:
    """Only the parameter-efficient tensors: LoRA factors (of `adapter_name`, or of every
    adapter), bottleneck adapters, soft prompts, and the modules marked to save (the new
    head); nothing of the frozen base.

    `peft_format=True` renames for a single adapter as peft saves it
    (`base_model.model.<module>.lora_A.weight`), for loading with peft.
    """
    saved = getattr(model, "modules_to_save", [])
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if _is_adapter_key(key, adapter_name) or any(key.startswith(s + ".") for s in saved):
            out[key] = value
    if not peft_format:
        return out
    names = {w[1] for k in out if (w := lora_factor_of(k)) is not None}
    if len(names) > 1:
        raise ValueError(f"peft_format holds one adapter; pass adapter_name (have "
                         f"{sorted(names)})")
    renamed = {}
    for key, value in out.items():
        which = lora_factor_of(key)
        if which is not None:
            key = key.replace(f".{which[0]}.{which[1]}.", f".{which[0]}.")
        renamed["base_model.model." + key] = value
    return renamed


def load_adapter_state_dict(model: Module, state_dict: Mapping[str, Any],
                            adapter_name: str | None = None) -> _IncompatibleKeys:
    """Load an `adapter_state_dict` into a model that already carries the same adapters
    (e.g. a fresh base after `apply_lora` with the same config). Keys peft writes
    (`base_model.model.*.lora_A.weight`) are mapped onto `adapter_name`, by default the
    active adapter.

    Returns:
        `(missing_keys, unexpected_keys)`: adapter tensors of the model the dict lacked,
        and (always empty, since it raises on them) keys the model does not have.

    Raises:
        RuntimeError: a key names no tensor of the model (was LoRA applied?) or a shape
            differs.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    if any(k.startswith("base_model.model.") for k in sd):
        active = adapter_name or next((m.active_adapter for _, m in lora_layers(model)
                                       if m.active_adapter is not None), "default")
        mapped = {}
        for key, value in sd.items():
            key = key.removeprefix("base_model.model.")
            for c in ("lora_A", "lora_B"):
                key = key.replace(f".{c}.weight", f".{c}.{active}.weight")
            mapped[key] = value
        sd = mapped
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        raise RuntimeError(f"load_adapter_state_dict: the model has no {unexpected[:5]} "
                           f"({len(unexpected)} unknown keys); apply the same LoRA / adapter "
                           f"config to the model first")
    model.load_state_dict(sd, strict=False)
    present = {w[1] for k in sd if (w := lora_factor_of(k)) is not None}
    missing = [k for k in own if k not in sd and _is_adapter_key(k, None)
               and ((w := lora_factor_of(k)) is None or w[1] in present)]
    return _IncompatibleKeys(missing, [])
