"""`summary(model, *inputs)`: a module tree as a table of output shapes and parameters.

    print(summary(model, input_ids, attention_mask, depth=2))

    module                         type           output           params  trainable
    bert                           Bert           (2, 12, 384)  22,565,376  22,565,376
    bert.embeddings                BertEmbeddings (2, 12, 384)  11,720,448  11,720,448
    ...
    total 22,566,146 parameters, 770 trainable (0.00%), 90.3 MB as float32 ...

With example inputs, the model runs once (eval mode, no gradients) and forward hooks record
each module's output shape; without, the table lists parameters only. A module's count
includes its children's; a parameter shared by several modules is counted once in the
total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minitl.autograd_state import no_grad
from minitl.nn.module import Module
from minitl.tensor import Tensor

__all__ = ["ModelSummary", "summary"]


@dataclass
class Row:
    name: str
    kind: str
    output: str  # "" when the model did not run, "-" when the module was not called
    params: int
    trainable: int


@dataclass
class ModelSummary:
    rows: list[Row]
    total: int  # distinct parameters
    trainable: int
    total_bytes: int  # parameter and buffer storage

    def __str__(self) -> str:
        head = ("module", "type", "output", "params", "trainable")
        body = [(r.name or "(model)", r.kind, r.output, f"{r.params:,}", f"{r.trainable:,}")
                for r in self.rows]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head)] + [fmt.format(*b) for b in body]
        pct = 100.0 * self.trainable / max(self.total, 1)
        lines.append(f"total {self.total:,} parameters, {self.trainable:,} trainable "
                     f"({pct:.2f}%), {self.total_bytes / 1e6:.1f} MB of parameters and "
                     f"buffers")
        return "\n".join(lines)


def _shape(out: Any) -> str:
    if isinstance(out, Tensor):
        return str(tuple(out.shape))
    if isinstance(out, (tuple, list)):
        return "[" + ", ".join(_shape(o) for o in out) + "]"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in out.items()) + "}"
    return type(out).__name__


def summary(model: Module, *inputs: Any, depth: int = 2, **kwargs: Any) -> ModelSummary:
    """The modules of `model` down to `depth` levels (0: the model alone) with their
    parameter counts and, given example inputs, their output shapes.

    Raises:
        ValueError: a negative depth.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    modules = [(n, m) for n, m in model.named_modules()
               if (n.count(".") + 1 if n else 0) <= depth]
    outputs: dict[str, str] = {}
    if inputs or kwargs:
        def record(name: str) -> Any:
            def hook(module: Module, args: Any, out: Any) -> None:  # None: output unchanged
                outputs.setdefault(name, _shape(out))  # the first call of a shared module
            return hook

        handles = [m.register_forward_hook(record(n)) for n, m in modules]
        was = model.training
        model.eval()
        try:
            with no_grad():
                model(*inputs, **kwargs)
        finally:
            model.train(was)
            for h in handles:
                h.remove()
    rows = []
    for n, m in modules:
        params = {id(p): p for p in m.parameters()}.values()
        rows.append(Row(n, type(m).__name__,
                        outputs.get(n, "-") if (inputs or kwargs) else "",
                        sum(p.numel() for p in params),
                        sum(p.numel() for p in params if p.requires_grad)))
    distinct = {id(p): p for p in model.parameters()}.values()
    buffers = {id(b): b for b in model.buffers()}.values()
    nbytes = sum(p.numel() * p.data.itemsize for p in distinct)
    nbytes += sum(b.numel() * b.data.itemsize for b in buffers)
    return ModelSummary(rows, sum(p.numel() for p in distinct),
                        sum(p.numel() for p in distinct if p.requires_grad), nbytes)
