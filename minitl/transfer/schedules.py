"""Fine-tuning schedules from ULMFiT (Howard & Ruder, arXiv:1801.06146): gradual unfreezing,
discriminative (layer-wise) learning rates, and the per-group lr schedules they run under.

Depth is read off parameter names: the first `layer.{i}` / `layers.{i}` / `h.{i}` /
`blocks.{i}` component (BERT, generic stacks, GPT), or else `layer{i}` / `stage{i}`
(ResNet stages). Blocks are ranked by index; the top block has depth 0. Parameters
outside every block go with the embeddings (the bottom) when they come before the first
block in `named_parameters` order or have "embed" in their name, and with the head (the
top) otherwise (pooler, final LayerNorm, classifier).

When no parameter name carries a block index (e.g. an `nn.Sequential` MLP, whose names
are "body.0.weight", "body.2.weight"), depth falls back to module order: each module that
owns parameters directly (in practice the leaf modules: Linear, LayerNorm, Embedding, ...)
is one layer, ranked in registration order, the last one on top (depth 0). Without this
fallback every parameter would silently get the same learning rate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.optim.lr_scheduler import get_cosine_schedule_with_warmup, slanted_triangular
from minitl.transfer.freeze import freeze, matches, named_parameter_groups, unfreeze

__all__ = ["GradualUnfreezing", "bert_unfreezing_stages", "block_index", "layerwise_lr_groups",
           "slanted_triangular", "warmup_cosine"]

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|blocks|block)\.(\d+)(?:\.|$)")
_STAGE = re.compile(r"(?:^|\.)(?:layer|stage)(\d+)(?:\.|$)")

warmup_cosine = get_cosine_schedule_with_warmup  # linear warmup, then cosine decay, per group


def block_index(name: str) -> tuple[str, int] | None:
    """(prefix up to and including the index, index) of the block a parameter belongs to,
    e.g. "bert.encoder.layer.3.output.dense.weight" -> ("bert.encoder.layer.3", 3)."""
    m = _BLOCK.search(name) or _STAGE.search(name)
    if m is None:
        return None
    return name[:m.end(1)], int(m.group(1))


def _owner(name: str) -> str:
    """Qualified name of the module that owns parameter `name` ("" for the root)."""
    return name.rpartition(".")[0]


def _module_order_depths(all_groups: list[tuple[Parameter, list[str]]],
                         head_patterns: Sequence[str]) -> dict[str, int]:
    """Fallback depth per owning module when no name has a block index: the owners in
    registration order (`named_parameters` is depth first), the last on top. Head owners
    are left out of the ranking so that, as with blocks, the head and the top layer both
    sit at depth 0. Ranked over every parameter, frozen or not, so that freezing a layer
    does not move the others."""
    owners: list[str] = []
    for _, names in all_groups:
        o = _owner(names[0])
        if o not in owners and not any(matches(n, head_patterns) for n in names):
            owners.append(o)
    return {o: len(owners) - 1 - i for i, o in enumerate(owners)}


def _depths(model: Module, head_patterns: Sequence[str], include_frozen: bool,
            depth_fn: Callable[[str], int | None] | None
            ) -> list[tuple[str, Parameter, int, str]]:
    """(name, param, depth, role) for each distinct parameter; role is "block", "head" or
    "embeddings"; depth 0 is the top. Without any block index every layer is a "block"
    (see `_module_order_depths`)."""
    all_groups = named_parameter_groups(model)
    groups = [(names, p) for p, names in all_groups if include_frozen or p.requires_grad]
    if not any(block_index(n) for _, names in all_groups for n in names):
        by_owner = _module_order_depths(all_groups, head_patterns)
        out = []
        for names, p in groups:
            name = names[0]
            if depth_fn is not None and (d := depth_fn(name)) is not None:
                out.append((name, p, d, "block"))
            elif any(matches(n, head_patterns) for n in names):
                out.append((name, p, 0, "head"))
            else:
                out.append((name, p, by_owner[_owner(name)], "block"))
        return out
    idx = {names[0]: block_index(names[0]) for names, _ in groups}
    ranks = sorted({b[1] for b in idx.values() if b is not None})
    n_blocks = len(ranks)
    out = []
    seen_block = False
    for names, p in groups:
        name = names[0]
        if depth_fn is not None and (d := depth_fn(name)) is not None:
            out.append((name, p, d, "block"))
            continue
        b = idx[name]
        if any(matches(n, head_patterns) for n in names):
            out.append((name, p, 0, "head"))
        elif b is not None:
            seen_block = True
            out.append((name, p, n_blocks - 1 - ranks.index(b[1]), "block"))
        elif not seen_block or "embed" in name:
            out.append((name, p, n_blocks, "embeddings"))
        else:
            out.append((name, p, 0, "head"))
    return out


def layerwise_lr_groups(model: Module, lr: float, decay: float = 0.8,
                        head_patterns: Sequence[str] = (), weight_decay: float | None = None,
                        no_decay: Sequence[str] = (), include_frozen: bool = False,
                        depth_fn: Callable[[str], int | None] | None = None
                        ) -> list[dict[str, Any]]:
    """Discriminative learning rates as optimizer param groups: the head and the top block
    get `lr`, the block d below the top `lr * decay**d`, the embeddings (depth = number of
    blocks) the smallest. A model without block indices in its names (an `nn.Sequential`
    body) is ranked by module order instead: its last parameterised module gets `lr`, the
    one registered before it `lr * decay`, and so on; modules matching `head_patterns` get
    `lr` and are not counted, so the layer under the head gets `lr` too.

    Args:
        model: any Module (depth read off the names or the module order, see the module
            docstring).
        lr: learning rate of the top block and the head.
        decay: factor per block going down (ULMFiT uses 1/2.6 per layer).
        head_patterns: parameter-name globs forced to the top (depth 0).
        weight_decay: set each group's weight_decay (None leaves the optimizer default).
        no_decay: name globs whose parameters get weight_decay 0 in separate groups
            (e.g. ("*.bias", "*LayerNorm.weight")); needs `weight_decay`.
        include_frozen: also list frozen parameters (so a later unfreeze needs no new
            optimizer; the optimizer skips parameters without a gradient).
        depth_fn: name -> depth override (None falls back to the default rule).

    Returns:
        Param groups, one per (depth, decay) pair, top first; every parameter appears in
        exactly one. Each group carries "depth" and "param_names" for inspection.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    if no_decay and weight_decay is None:
        raise ValueError("no_decay needs weight_decay")
    buckets: dict[tuple[int, bool], list[tuple[str, Parameter]]] = {}
    for name, p, depth, _ in _depths(model, head_patterns, include_frozen, depth_fn):
        nd = bool(no_decay) and matches(name, no_decay)
        buckets.setdefault((depth, nd), []).append((name, p))
    groups = []
    for (depth, nd), items in sorted(buckets.items()):
        g: dict[str, Any] = {"params": [p for _, p in items], "lr": lr * decay**depth,
                             "depth": depth, "param_names": [n for n, _ in items]}
        if weight_decay is not None:
            g["weight_decay"] = 0.0 if nd else weight_decay
        groups.append(g)
    return groups


def bert_unfreezing_stages(model: Module, head_patterns: Sequence[str] = (),
                           include_embeddings: bool = True) -> list[list[str]]:
    """Stages for `GradualUnfreezing`: the head (every non-block parameter above the
    blocks, e.g. pooler and classifier), then one block per stage from the top down, then
    the embeddings. Block stages are prefix globs ("bert.encoder.layer.11.*"); the head
    and embedding stages list exact names, and so do the layers of a model ranked by module
    order (one stage per parameterised module, top first; there is no embeddings stage)."""
    items = _depths(model, head_patterns, include_frozen=True, depth_fn=None)
    head = [n for n, _, _, role in items if role == "head"]
    blocks: dict[int, list[str]] = {}
    for name, _, depth, role in items:
        if role == "block":
            b = block_index(name)
            entry = f"{b[0]}.*" if b else name  # no index: every name of the layer
            if entry not in blocks.setdefault(depth, []):
                blocks[depth].append(entry)
    stages = [head] if head else []
    stages += [blocks[d] for d in sorted(blocks)]
    emb = [n for n, _, _, role in items if role == "embeddings"]
    if include_embeddings and emb:
        stages.append(emb)
    return stages


class GradualUnfreezing:
    """ULMFiT's gradual unfreezing: train the head first, then unfreeze one more stage
    every `every` epochs (call `.step()` once per epoch, after it).

        stages = bert_unfreezing_stages(model)       # [[head...], ["...layer.11.*"], ...]
        unfreezer = GradualUnfreezing(model, stages)  # freezes all but stages[0]
        for epoch in range(n):
            train_one_epoch(...)
            unfreezer.step()

    Build the optimizer over all parameters (e.g. `layerwise_lr_groups(...,
    include_frozen=True)`): frozen ones receive no gradient and the optimizer skips them.

    Args:
        model: the model.
        stages: lists of parameter-name globs; stage 0 trains from the start.
        every: epochs per stage.
    """

    def __init__(self, model: Module, stages: Sequence[Sequence[str]], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not stages:
            raise ValueError("GradualUnfreezing needs at least one stage")
        self.model = model
        self.stages = [[s] if isinstance(s, str) else list(s) for s in stages]
        self.every = every
        self.epoch = 0
        self.stage = 0
        freeze(model)
        unfreeze(model, self.stages[0])

    def step(self) -> list[str]:
        """End of an epoch: unfreeze the next stage when it is due. Returns the parameter
        names unfrozen now ([] when nothing changed)."""
        self.epoch += 1
        target = min(self.epoch // self.every, len(self.stages) - 1)
        newly: list[str] = []
        while self.stage < target:
            self.stage += 1
            newly += unfreeze(self.model, self.stages[self.stage])
        return newly

    @property
    def done(self) -> bool:
        return self.stage == len(self.stages) - 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position and the requires_grad flags it implies."""
        self.epoch, self.stage = int(state["epoch"]), int(state["stage"])
        freeze(self.model)
        for s in self.stages[:self.stage + 1]:
            unfreeze(self.model, s)
