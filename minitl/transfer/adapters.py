"""Bottleneck adapters (Houlsby et al., arXiv:1902.00751; Pfeiffer et al., arXiv:2005.00247).

An adapter is a small residual MLP, `z + up(act(down(z)))` with `down` D -> m and `up`
m -> D (m = the bottleneck, a few dozen units), placed after a sub-layer's output
projection and before its residual sum and LayerNorm. `up` starts at zero, so the adapted
network computes exactly what the pretrained one did until training moves it.

Placement ("houlsby" | "pfeiffer"):
- houlsby: after both projections of each block, the attention output projection and the
  feed-forward output projection (BERT: `*.attention.output.dense` and `*.output.dense`;
  GPT: `*.attn.c_proj` and `*.mlp.c_proj`); LayerNorms train too (`train_layernorm`).
- pfeiffer: after the feed-forward output projection only.

Each adapter is registered as a child `adapter` of the projection it follows and runs as
a forward hook on it, so every pretrained parameter keeps its name and a base checkpoint
still loads. With BERT's `LayerNorm(dropout(dense(h)) + x)` the adapter sees the
projection's output before dropout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import minitl.nn.functional as F
from minitl.nn.linear import Linear
from minitl.nn.module import Module
from minitl.nn.norm import LayerNorm
from minitl.tensor import Tensor
from minitl.transfer.freeze import freeze
from minitl.transfer.lora import mark_modules_to_save, module_matches

__all__ = ["Adapter", "adapter_parameters", "apply_adapters", "remove_adapters"]

_ACTS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu, "tanh": F.tanh}

_ATTENTION_OUT = ("*.attention.output.dense", "*.attn.c_proj")
_FFN_OUT = ("*.output.dense", "*.mlp.c_proj")


class Adapter(Module):
    """`z + up(act(down(z)))`: a bottleneck MLP with a skip connection.

    Args:
        dim: feature size D of the sub-layer output.
        bottleneck: hidden size m (m << D).
        activation: "relu", "gelu" or "tanh".

    Shape:
        - Input / output: (*, D)
    """

    def __init__(self, dim: int, bottleneck: int = 64, activation: str = "relu",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if activation not in _ACTS:
            raise ValueError(f"activation must be one of {sorted(_ACTS)}, got {activation!r}")
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
        self.activation = activation
        self.down = Linear(dim, bottleneck, device=device, dtype=dtype)
        self.up = Linear(bottleneck, dim, device=device, dtype=dtype)
        self.up.weight.data[...] = 0  # near-identity init: the adapter starts as z -> z
        self.up.bias.data[...] = 0

    def forward(self, z: Tensor) -> Tensor:
        return z + self.up(_ACTS[self.activation](self.down(z)))

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


def _run_adapter(module: Module, args: Any, out: Tensor) -> Tensor:
    return module.adapter(out)


def _default_targets(placement: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(patterns, exclusions) on module names."""
    if placement == "houlsby":
        return _ATTENTION_OUT + _FFN_OUT, ()
    if placement == "pfeiffer":
        return _FFN_OUT, _ATTENTION_OUT
    raise ValueError(f"placement must be 'houlsby' or 'pfeiffer', got {placement!r}")


def apply_adapters(model: Module, bottleneck: int = 64, placement: str = "houlsby",
                   target: Sequence[str] | None = None, train_layernorm: bool | None = None,
                   modules_to_save: Sequence[str] = ("classifier",),
                   activation: str = "relu") -> list[str]:
    """Insert an `Adapter` after every target projection, in place, and freeze the rest
    except the adapters, (optionally) the LayerNorms and the head.

    Args:
        model: any Module; BERT and GPT names are the defaults.
        bottleneck: adapter hidden size.
        placement: "houlsby" (after attention and FFN outputs) or "pfeiffer" (FFN only);
            picks the default targets.
        target: module-name patterns to use instead of the placement's defaults.
        train_layernorm: train every LayerNorm (default: True for houlsby, False for
            pfeiffer, as in the papers). Trained LayerNorms are saved with the adapters.
        modules_to_save: module-name patterns trained in full and saved (the new head).
        activation: the adapter's nonlinearity.

    Returns:
        The names of the modules that received an adapter.

    Raises:
        ValueError: no module matched.
    """
    patterns, excluded = _default_targets(placement)
    if target is not None:
        patterns, excluded = tuple(target), ()
    if train_layernorm is None:
        train_layernorm = placement == "houlsby"
    names = []
    for name, m in list(model.named_modules()):
        if (not name or ".adapter" in f".{name}" or not module_matches(name, patterns)
                or module_matches(name, excluded)):
            continue
        if "adapter" in m._modules:
            raise ValueError(f"{name} already has an adapter")
        w = getattr(m, "weight", None)
        dim = getattr(m, "out_features", None) or (w.shape[0] if w is not None else None)
        if dim is None:
            continue  # a container, not a projection
        m.adapter = Adapter(dim, bottleneck, activation,
                            device=None if w is None else str(w.device),
                            dtype=None if w is None else w.dtype)
        m.adapter.train(m.training)
        m.adapter._hook = m.register_forward_hook(_run_adapter)
        names.append(name)
    if not names:
        raise ValueError(f"apply_adapters: no module matched {patterns}")
    freeze(model, except_=("*.adapter.*", "adapter.*"))
    if train_layernorm:
        ln = [n for n, m in model.named_modules() if isinstance(m, LayerNorm)]
        if ln:
            mark_modules_to_save(model, ln)
    if modules_to_save:
        mark_modules_to_save(model, modules_to_save)
    return names


def adapter_parameters(model: Module) -> list[Any]:
    """The parameters of every bottleneck adapter in `model`."""
    return [p for n, p in model.named_parameters() if ".adapter." in f".{n}"]


def remove_adapters(model: Module) -> None:
    """Take every bottleneck adapter out again (hooks and modules)."""
    for _, m in list(model.named_modules()):
        a = m._modules.get("adapter")
        if isinstance(a, Adapter):
            hook = getattr(a, "_hook", None)
            if hook is not None:
                hook.remove()
            del m._modules["adapter"]
