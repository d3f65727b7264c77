"""Freezing by name, parameter counts, head surgery and cached feature extraction.

Everything here addresses parameters by their qualified names with glob patterns
(`minitl.io.patterns.glob_match`: fnmatch, case-sensitive, length-capped; the one matcher
LoRA targets and checkpoint loading use too): `"encoder.layer.11.*"`, `"*.LayerNorm.*"`,
`"classifier.*"`.
A tied parameter (one Parameter reachable under several names, e.g. BERT's MLM decoder
and its word embeddings) matches a pattern when any of its names does.

Feature extraction runs a frozen backbone once over a dataset in eval mode without
gradients and caches what it returns, so that training a head for many epochs never runs
the backbone again (the cheapest form of transfer: a linear probe on frozen features).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minitl.autograd_state import no_grad
from minitl.io.patterns import glob_match
from minitl.nn.linear import Linear
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor

__all__ = ["FeatureCache", "FeatureSet", "count_parameters", "default_feature_cache",
           "extract_features", "freeze", "matches", "named_parameter_groups", "reinit_head",
           "replace_head", "trainable_parameters", "unfreeze"]

Patterns = str | Sequence[str]


def _as_patterns(patterns: Patterns) -> tuple[str, ...]:
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def matches(name: str, patterns: Patterns) -> bool:
    """True if `name` matches any of the glob `patterns` (case-sensitive)."""
    return any(glob_match(name, p) for p in _as_patterns(patterns))


def named_parameter_groups(model: Module) -> list[tuple[Parameter, list[str]]]:
    """Each distinct Parameter once, in `named_parameters` order, with every name it has
    (tied weights have several)."""
    found: OrderedDict[int, tuple[Parameter, list[str]]] = OrderedDict()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in found:
            if name not in found[id(p)][1]:
                found[id(p)][1].append(name)
        else:
            found[id(p)] = (p, [name])
    return list(found.values())


def freeze(model: Module, patterns: Patterns = ("*",), except_: Patterns = ()) -> list[str]:
    """Stop gradients (`requires_grad = False`) for the parameters matching `patterns` and
    none of `except_`; drop their `.grad` so an optimizer step leaves them untouched.
    Parameters outside `patterns` keep their current state.

        freeze(model, except_=("classifier.*",))   # the head alone stays trainable

    Returns:
        The (first) names of the parameters frozen.
    """
    pats, keep = _as_patterns(patterns), _as_patterns(except_)
    frozen = []
    for p, names in named_parameter_groups(model):
        if any(matches(n, pats) for n in names) and not any(matches(n, keep) for n in names):
            p.requires_grad = False
            p.grad = None
            frozen.append(names[0])
    return frozen


def unfreeze(model: Module, patterns: Patterns = ("*",)) -> list[str]:
    """Make the parameters matching `patterns` (a glob or a sequence of them, as `freeze`
    takes) trainable; all of them by default. Returns their (first) names."""
    pats = _as_patterns(patterns)
    out = []
    for p, names in named_parameter_groups(model):
        if any(matches(n, pats) for n in names):
            p.requires_grad = True
            out.append(names[0])
    return out


def trainable_parameters(model: Module) -> list[tuple[str, Parameter]]:
    """(name, Parameter) for every parameter with `requires_grad`, each listed once."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def count_parameters(model: Module) -> tuple[int, int]:
    """`(trainable, total)` element counts; a parameter shared by several modules (tied
    weights) counts once."""
    trainable = total = 0
    for _, p in model.named_parameters():  # deduplicated by identity
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


# ---- heads -----------------------------------------------------------------------------

def _parent(model: Module, name: str) -> tuple[Module, str]:
    if not name:
        raise ValueError("the head's name must not be empty")
    prefix, _, last = name.rpartition(".")
    parent = model.get_submodule(prefix)
    if last not in parent._modules:
        raise AttributeError(f"{type(parent).__name__} {prefix or '(root)'!r} has no child "
                             f"module {last!r}")
    return parent, last


def replace_head(model: Module, name: str, new_module: Module | int) -> Module:
    """Put `new_module` at dotted path `name` (e.g. "classifier", "fc", "cls.predictions")
    and return the module it replaces. An int builds a fresh `nn.Linear` with the old
    head's `in_features` and that many outputs, on the old head's device and dtype."""
    parent, last = _parent(model, name)
    old = parent._modules[last]
    assert old is not None
    if isinstance(new_module, int):
        if not isinstance(old, Linear) and not hasattr(old, "in_features"):
            raise TypeError(f"replace_head: cannot infer in_features from {type(old).__name__}; "
                            f"pass a module")
        w = getattr(old, "weight", None)
        new_module = Linear(old.in_features, new_module, bias=getattr(old, "bias", None)
                            is not None,
                            device=None if w is None else str(w.device),
                            dtype=None if w is None else w.dtype)
    if not isinstance(new_module, Module):
        raise TypeError(f"replace_head: expected a Module or an int, got "
                        f"{type(new_module).__name__}")
    parent._modules[last] = new_module  # keeps the child's position in the registry
    return old  # type: ignore[return-value]


def reinit_head(model: Module, name: str) -> Module:
    """Re-initialise every layer under `name` that has `reset_parameters` (fresh random
    head, same shapes) and make its parameters trainable. Returns the head."""
    head = model.get_submodule(name)
    with no_grad():
        for m in head.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    for p in head.parameters():
        p.requires_grad = True
    return head


# ---- cached feature extraction ---------------------------------------------------------

@dataclass
class FeatureSet:
    """Backbone outputs for a whole dataset, with the batches' other fields (labels).

    Attributes:
        features: (N, ...) the backbone outputs, concatenated over batches.
        targets: the non-input fields of each batch (labels, ...), concatenated, in order.
    """

    features: Tensor
    targets: tuple[Tensor, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return self.features.shape[0]

    def batches(self, batch_size: int, shuffle: bool = False,
                seed: int | None = None) -> Iterator[tuple[Tensor, ...]]:
        """`(features, *targets)` mini-batches, e.g. to train a linear probe."""
        n = len(self)
        order = (np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n))
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield (self.features[idx], *(t[idx] for t in self.targets))


class FeatureCache:
    """Feature sets by key, in memory and optionally also on disk (`directory`, one
    safetensors file per key), with hit/miss counters."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = None if directory is None else os.fspath(directory)
        self._mem: dict[str, FeatureSet] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> str | None:
        return None if self.directory is None else os.path.join(self.directory,
                                                                f"{key}.safetensors")

    def get(self, key: str) -> FeatureSet | None:
        fs = self._mem.get(key)
        path = self._path(key)
        if fs is None and path is not None and os.path.exists(path):
            from minitl.io import load

            sd = load(path)
            n = sum(1 for k in sd if k.startswith("target_"))
            fs = FeatureSet(sd["features"], tuple(sd[f"target_{i}"] for i in range(n)))
            self._mem[key] = fs
        if fs is None:
            self.misses += 1
        else:
            self.hits += 1
        return fs

    def put(self, key: str, fs: FeatureSet) -> None:
        self._mem[key] = fs
        path = self._path(key)
        if path is not None:
            from minitl.io import save

            os.makedirs(self.directory, exist_ok=True)  # type: ignore[arg-type]
            sd = {"features": fs.features, **{f"target_{i}": t for i, t in
                                              enumerate(fs.targets)}}
            save(sd, path)

    def __contains__(self, key: object) -> bool:
        path = self._path(str(key))
        return key in self._mem or (path is not None and os.path.exists(path))

    def __len__(self) -> int:
        return len(self._mem)

    def clear(self) -> None:
        self._mem.clear()


_DEFAULT_CACHE = FeatureCache()


def default_feature_cache() -> FeatureCache:
    """The process-wide cache `extract_features` uses when given none (`.clear()` it to
    free the memory)."""
    return _DEFAULT_CACHE


def _host(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.numpy()
    return np.asarray(x)


def _split_batch(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]]:
    """(args, kwargs, targets): a tuple/list is (inputs, *targets); a dict passes every
    key except "labels"/"label" as keyword arguments; anything else is the input."""
    if isinstance(batch, (tuple, list)):
        return (batch[0],), {}, tuple(batch[1:])
    if isinstance(batch, Mapping):
        labels = tuple(batch[k] for k in ("labels", "label") if k in batch)
        return (), {k: v for k, v in batch.items() if k not in ("labels", "label")}, labels
    return (batch,), {}, ()


def _owner(fn: Any) -> Module | None:
    if isinstance(fn, Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, Module) else None


def _fingerprint(backbone_fn: Any, batches: list[Any]) -> str:
    """sha1 over the backbone (identity and current weights) and the batches' content."""
    h = hashlib.sha1()
    owner = _owner(backbone_fn)
    func = getattr(backbone_fn, "__func__", backbone_fn)
    h.update(f"{type(func).__qualname__}:{id(func)}:{id(owner)}".encode())
    if owner is not None:
        for name, p in owner.named_parameters():
            h.update(name.encode())
            h.update(np.ascontiguousarray(p.numpy()).tobytes())

    def feed(x: Any) -> None:
        if isinstance(x, Mapping):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (tuple, list)):
            h.update(b"(")
            for v in x:
                feed(v)
            h.update(b")")
        else:
            a = np.ascontiguousarray(_host(x))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())

    feed(batches)
    return h.hexdigest()


def extract_features(backbone_fn: Callable[..., Any], batches: Iterable[Any], *,
                     cache: FeatureCache | bool | None = None, key: str | None = None
                     ) -> FeatureSet:
    """Run `backbone_fn` once over `batches` in eval mode under `no_grad` and return (and
    cache) its outputs with the batches' labels.

    Args:
        backbone_fn: a Module or any callable (e.g. `resnet.features`, a bound method); a
            Module it belongs to is put in eval mode for the pass and restored after.
        batches: a loader or any iterable of batches: `(inputs, *targets)` tuples, dicts
            (every key but "labels"/"label" goes to the backbone as a keyword argument),
            or bare inputs. Iterate it in a fixed order (no shuffling): the cache key
            hashes the content in order.
        cache: a FeatureCache; None uses the process-wide default; False disables caching.
        key: a cache key; by default a sha1 of the backbone (identity and weights) and of
            the batches' content, so a backbone that changed is run again.

    Returns:
        A FeatureSet: `features` (N, ...) and `targets` (labels, ... concatenated).
    """
    data = list(batches)
    store = (None if cache is False
             else cache if isinstance(cache, FeatureCache) else _DEFAULT_CACHE)
    if store is not None:
        key = key or _fingerprint(backbone_fn, data)
        hit = store.get(key)
        if hit is not None:
            return hit
    owner = _owner(backbone_fn)
    was_training = owner.training if owner is not None else False
    feats: list[np.ndarray] = []
    targets: list[list[np.ndarray]] = []
    try:
        if owner is not None:
            owner.eval()
        with no_grad():
            for batch in data:
                args, kwargs, tgt = _split_batch(batch)
                feats.append(_host(backbone_fn(*args, **kwargs)))
                targets.append([_host(t) for t in tgt])
    finally:
        if owner is not None:
            owner.train(was_training)
    if not feats:
        raise ValueError("extract_features: no batches")
    fs = FeatureSet(Tensor(np.concatenate(feats, axis=0)),
                    tuple(Tensor(np.concatenate(col, axis=0)) for col in zip(*targets)))
    if store is not None:
        assert key is not None
        store.put(key, fs)
    return fs
