"""LoRA adapters in the layout the PEFT library reads and writes: a directory holding
`adapter_config.json` and `adapter_model.safetensors`.

    save_peft_adapter(model, "runs/lora-peft")       # minitl -> PEFT
    load_peft_adapter(model, "runs/lora-peft")       # PEFT (or minitl) -> minitl

The weights file names each tensor as PEFT does after dropping the adapter name:
`base_model.model.<module>.lora_A.weight` / `.lora_B.weight`, plus the full tensors of the
modules trained alongside (`modules_to_save`, e.g. a new `classifier`) under
`base_model.model.<module>.<param>`. Module names are minitl's, which follow Hugging Face's
(`bert.encoder.layer.0.attention.self.query`), so an adapter moves between a minitl
`BertForSequenceClassification` and a transformers one unchanged.

Only plain LoRA is read: options that change the computation in ways minitl's LoRA layers do
not implement (DoRA, rank-stabilised scaling, per-module rank or alpha, LoRA biases, layer
subsets, fan-in-fan-out weights) are refused with a message naming the field, never
ignored.

An adapter directory is checked before anything is allocated from it: the config's fields
(types and ranges), then the weights file's header (names, dtypes, shapes; no tensor bytes)
against the config's `r` and, when loading, against the model's own layer shapes, so a few-KB
adapter claiming `r: 65536` fails in milliseconds instead of allocating gigabytes first.
`target_modules` is matched as PEFT matches it (a list: module names or `.name` suffixes,
compared as plain strings; a string: a regex over full names), the regex by
`minitl.io.patterns.SafeRegex`, which cannot backtrack.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from minitl.io import load, read_header, save
from minitl.io.patterns import SafeRegex, check_pattern
from minitl.io.safetensors import atomic_write
from minitl.nn.conv import Conv2d
from minitl.nn.linear import Linear
from minitl.nn.module import Module

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "load_peft_adapter", "read_peft_config",
           "save_peft_adapter"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_FACTORS = (".lora_A.weight", ".lora_B.weight")
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
MAX_TARGETS = 10_000  # entries of target_modules / modules_to_save

# PEFT options whose non-default values change the forward pass; value = the default.
_UNSUPPORTED = {"use_dora": False, "use_rslora": False, "lora_bias": False, "bias": "none",
                "fan_in_fan_out": False, "rank_pattern": {}, "alpha_pattern": {},
                "layers_to_transform": None, "layer_replication": None,
                "target_parameters": None, "trainable_token_indices": None}


def _lora_modules(model: Module, adapter_name: str) -> list[str]:
    from minitl.transfer.lora import LoRALayer

    return [n for n, m in model.named_modules()
            if isinstance(m, LoRALayer) and adapter_name in m.lora_A]


def _target_modules(model: Module, names: list[str]) -> list[str]:
    """The shortest `target_modules` list that selects exactly `names` under PEFT's rule (a
    target matches a module named `target` or ending in `.target`): the last name
    components where they pick out the same modules, else the full names."""
    suffixes = {n.rsplit(".", 1)[-1] for n in names}
    layers = {n for n, m in model.named_modules() if isinstance(m, (Linear, Conv2d))}
    chosen = {n for n in layers | set(names) if n.rsplit(".", 1)[-1] in suffixes}
    return sorted(suffixes) if chosen == set(names) else sorted(names)


def save_peft_adapter(model: Module, directory: str | os.PathLike[str],
                      adapter_name: str = "default", *,
                      base_model_name_or_path: str | None = None,
                      task_type: str | None = None) -> Path:
    """Write LoRA adapter `adapter_name` of `model` (and its `modules_to_save`) as
    `directory/adapter_config.json` + `directory/adapter_model.safetensors`; returns the
    directory. `task_type` is PEFT's (e.g. "SEQ_CLS"); by default it is "SEQ_CLS" when the
    model has a `classifier` among its saved modules and left out otherwise.

    Raises:
        ValueError: the model has no LoRA adapter of that name, or it is merged.
    """
    from minitl.transfer.lora import adapter_state_dict, lora_layers

    cfg = getattr(model, "lora_config", {}).get(adapter_name)
    names = _lora_modules(model, adapter_name)
    if cfg is None or not names:
        raise ValueError(f"save_peft_adapter: the model has no LoRA adapter {adapter_name!r} "
                         f"(apply_lora first; have {sorted(getattr(model, 'lora_config', {}))})")
    if any(adapter_name in m.merged_adapters for _, m in lora_layers(model)):
        raise ValueError(f"save_peft_adapter: adapter {adapter_name!r} is merged into the "
                         f"weights; unmerge_lora(model) first")
    tensors = {k: v for k, v in adapter_state_dict(model, adapter_name, peft_format=True).items()
               if ".adapter." not in k and ".soft_prompt" not in k}
    saved = list(getattr(model, "modules_to_save", []))
    if task_type is None and any(s.rsplit(".", 1)[-1] == "classifier" for s in saved):
        task_type = "SEQ_CLS"
    config = {
        "peft_type": "LORA", "task_type": task_type, "r": cfg.r, "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout, "target_modules": _target_modules(model, names),
        "modules_to_save": saved or None, "base_model_name_or_path": base_model_name_or_path,
        "inference_mode": True, "init_lora_weights": True, **_UNSUPPORTED,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save(tensors, directory / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / ADAPTER_CONFIG, lambda f: f.write(text.encode("utf-8")))
    return directory


def read_peft_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """`adapter_config.json` of a PEFT LoRA directory, checked for what minitl can run.

    Raises:
        FileNotFoundError: the directory lacks adapter_config.json or the weights.
        ValueError: not a LoRA adapter, a malformed field, or an option minitl does not
            implement (the message names the field and its value).
    """
    directory = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a PEFT adapter directory: {name} "
                                    f"is missing")
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / ADAPTER_CONFIG} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{directory / ADAPTER_CONFIG}: expected a JSON object")  # noqa: TRY004
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{directory}: peft_type {config.get('peft_type')!r} is not supported "
                         f"(only LORA)")
    for key, default in _UNSUPPORTED.items():
        value = config.get(key, default)
        if value not in (default, None) and not (default == {} and not value):
            raise ValueError(f"{directory}: {key}={value!r} is not supported by minitl's "
                             f"LoRA layers (it needs {key}={default!r})")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in config:
            raise ValueError(f"{directory / ADAPTER_CONFIG}: missing field {key!r}")
    _check_fields(directory / ADAPTER_CONFIG, config)
    _check_header(directory, config)
    return config


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _names(where: Path, key: str, value: Any) -> None:
    """A list of at most MAX_TARGETS strings, each at most MAX_PATTERN_CHARS long."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{where}: {key} must be a list of module names"
                         f"{' or a regex string' if key == 'target_modules' else ''}, "
                         f"got {str(value)[:80]}")
    if len(value) > MAX_TARGETS:
        raise ValueError(f"{where}: {key} lists {len(value)} names (at most {MAX_TARGETS})")
    for t in value:
        check_pattern(t, f"{key} entry {t[:40]!r}...")


def _check_fields(where: Path, config: dict[str, Any]) -> None:
    """Types and ranges of the fields load_peft_adapter uses (ValueError naming the field)."""
    r, alpha, dropout = config["r"], config["lora_alpha"], config.get("lora_dropout")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{where}: r must be a positive integer, got {r!r}")
    if not _number(alpha) or alpha <= 0:
        raise ValueError(f"{where}: lora_alpha must be a positive number, got {alpha!r}")
    if dropout is not None and (not _number(dropout) or not 0 <= dropout < 1):
        raise ValueError(f"{where}: lora_dropout must be a number in [0, 1), got {dropout!r}")
    targets = config["target_modules"]
    if isinstance(targets, str):
        SafeRegex(targets)  # ValueError for a regex that is invalid, too long or unsafe
    else:
        _names(where, "target_modules", targets)
    if config.get("modules_to_save") is not None:
        _names(where, "modules_to_save", config["modules_to_save"])


def _check_header(directory: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The weights file's header (no tensor data), checked against the config alone: PEFT
    names, float dtypes, no empty dimension, and LoRA factors of rank `r` in pairs."""
    path = directory / ADAPTER_WEIGHTS
    header = {k: v for k, v in read_header(path).items() if k != "__metadata__"}
    r = config["r"]
    modules = set()
    for key, info in header.items():
        shape = tuple(info["shape"])
        if not key.startswith(_PREFIX):
            raise ValueError(f"{path}: tensor {key!r} is not named {_PREFIX}<module>... as "
                             f"PEFT names adapter tensors")
        if info["dtype"] not in _FLOAT_DTYPES or 0 in shape or not shape:
            raise ValueError(f"{path}: tensor {key!r} is {info['dtype']} of shape {shape}; "
                             "adapter tensors are non-empty floating-point arrays")
        if key.endswith(_FACTORS):
            rank = shape[0] if key.endswith(_FACTORS[0]) else shape[1] if len(shape) > 1 else 0
            if rank != r or len(shape) not in (2, 4):
                raise ValueError(f"{path}: {key} has shape {shape}, which is not a LoRA factor "
                                 f"of rank r={r} (adapter_config.json)")
            modules.add(key[: -len(_FACTORS[0])])
    for m in sorted(modules):
        unpaired = [m + f for f in _FACTORS if m + f not in header]
        if unpaired:
            raise ValueError(f"{path}: {unpaired[0]} is missing (LoRA factors come in pairs)")
    return header


def _check_fits(model: Module, directory: Path, config: dict[str, Any],
                targets: tuple[str, ...], saved: list[str]) -> None:
    """Every tensor of the weights file against the shape the model will give it, before
    apply_lora allocates anything: LoRA factors for exactly the targeted layers, full
    tensors of the modules to save, nothing else."""
    from minitl.transfer.lora import LoRALayer

    r = config["r"]
    modules = dict(model.named_modules())
    want: dict[str, tuple[int, ...]] = {}
    for n in targets:
        w = tuple(modules[n].weight.shape)  # Linear (out, in); Conv2d (out, in, kh, kw)
        conv = isinstance(modules[n], Conv2d) or (isinstance(modules[n], LoRALayer)
                                                  and len(w) == 4)
        want[f"{_PREFIX}{n}.lora_A.weight"] = (r, *w[1:]) if conv else (r, w[1])
        want[f"{_PREFIX}{n}.lora_B.weight"] = (w[0], r, 1, 1) if conv else (w[0], r)
    for n in saved:
        for pname, p in modules[n].named_parameters():
            want.setdefault(f"{_PREFIX}{n}.{pname}", tuple(p.shape))
    path = directory / ADAPTER_WEIGHTS
    header = _check_header(directory, config)
    for key, info in header.items():
        if key not in want:
            raise ValueError(f"{path}: tensor {key!r} names neither a LoRA factor of a "
                             f"targeted layer nor a parameter of modules_to_save "
                             f"({len(targets)} layers targeted by {_short(config)})")
        if tuple(info["shape"]) != want[key]:
            raise ValueError(f"{path}: {key} has shape {tuple(info['shape'])}, but r={r} "
                             f"and the model's layer need {want[key]}")
    missing = [k for k in want if k.endswith(_FACTORS) and k not in header]
    if missing:
        raise ValueError(f"{directory}: {ADAPTER_WEIGHTS} lacks {len(missing)} LoRA factors "
                         f"the config asks for, e.g. {missing[:3]}")


def _short(config: dict[str, Any]) -> str:
    return f"target_modules={str(config['target_modules'])[:80]}"


def _layers(model: Module) -> list[str]:
    """Names of the layers LoRA can adapt: Linear, Conv2d, or one already adapted (not the
    factors inside an adapted layer)."""
    from minitl.transfer.lora import LoRALayer

    out: list[str] = []
    adapted: list[str] = []
    for n, m in model.named_modules():
        if not n or any(n.startswith(a) for a in adapted):
            continue
        if isinstance(m, LoRALayer):
            adapted.append(n + ".")
        if isinstance(m, (Linear, Conv2d, LoRALayer)):
            out.append(n)
    return out


def _targets(model: Module, target_modules: Any) -> tuple[str, ...]:
    """The full names of the layers PEFT's target_modules selects: a list entry matches a
    module named exactly so or ending in "." + entry (plain strings, as PEFT compares them);
    a string is a regular expression that must match a whole name (re.fullmatch)."""
    layers = _layers(model)
    if isinstance(target_modules, str):
        rx = SafeRegex(target_modules)
        names = tuple(n for n in layers if rx.fullmatch(n))
        what = f"target_modules regex {target_modules!r}"
    else:
        if not isinstance(target_modules, list) or not all(isinstance(t, str)
                                                           for t in target_modules):
            raise ValueError(f"target_modules must be a list of names or a regex string, got "
                             f"{str(target_modules)[:80]}")
        wanted = set(target_modules)
        names = tuple(n for n in layers
                      if n in wanted or n.rsplit(".", 1)[-1] in wanted
                      or any(n.endswith("." + t) for t in wanted if "." in t))
        what = f"target_modules {str(target_modules)[:80]}"
    if not names:
        raise ValueError(f"{what} matches no Linear or Conv2d module of "
                         f"{type(model).__name__}")
    return names


def _glob_literal(name: str) -> str:
    """A glob matching exactly `name` (module names may hold * ? [ in a ModuleDict key)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def load_peft_adapter(model: Module, directory: str | os.PathLike[str],
                      adapter_name: str = "default") -> Module:
    """Put the LoRA adapter saved in `directory` (by PEFT's `save_pretrained` or by
    `save_peft_adapter`) on `model` as adapter `adapter_name`, with its weights and those of
    its `modules_to_save`. The model must have the base weights the adapter was trained on.

    Returns:
        The model (changed in place: apply_lora + the saved tensors).

    Raises:
        FileNotFoundError / ValueError: see `read_peft_config`; ValueError also for a LoRA
            factor the file lacks.
        RuntimeError: a tensor of the file that names nothing in the model, or a shape
            that differs (each named, by `load_adapter_state_dict`).
    """
    from minitl.transfer.lora import LoRAConfig, apply_lora, load_adapter_state_dict

    directory = Path(directory)
    config = read_peft_config(directory)
    wanted = set(config.get("modules_to_save") or [])
    saved = [n for n, _ in model.named_modules()
             if n and (n in wanted or any(n.endswith("." + s) for s in wanted))]
    targets = _targets(model, config["target_modules"])
    # everything the file holds is checked against the model before apply_lora allocates
    _check_fits(model, directory, config, targets, saved)
    cfg = LoRAConfig(r=config["r"], alpha=float(config["lora_alpha"]),
                     dropout=float(config.get("lora_dropout") or 0.0),
                     target=tuple(_glob_literal(n) for n in targets),
                     modules_to_save=tuple(_glob_literal(n) for n in saved))
    apply_lora(model, cfg, adapter_name)
    state = load(directory / ADAPTER_WEIGHTS)
    load_adapter_state_dict(model, state, adapter_name)  # names and shapes checked there
    return model
