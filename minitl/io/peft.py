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
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from minitl.io import load, save
from minitl.io.safetensors import atomic_write
from minitl.nn.conv import Conv2d
from minitl.nn.linear import Linear
from minitl.nn.module import Module

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "load_peft_adapter", "read_peft_config",
           "save_peft_adapter"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."

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
    from minitl.transfer.lora import _lora_layers, adapter_state_dict

    cfg = getattr(model, "lora_config", {}).get(adapter_name)
    names = _lora_modules(model, adapter_name)
    if cfg is None or not names:
        raise ValueError(f"save_peft_adapter: the model has no LoRA adapter {adapter_name!r} "
                         f"(apply_lora first; have {sorted(getattr(model, 'lora_config', {}))})")
    if any(adapter_name in m.merged_adapters for _, m in _lora_layers(model)):
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
    return config


def _targets(model: Module, target_modules: Any) -> tuple[str, ...]:
    """PEFT's target_modules as minitl patterns: a list (exact name or `.name` suffix) maps
    to itself; a string is a regular expression over full module names, resolved here."""
    if isinstance(target_modules, str):
        names = tuple(n for n, m in model.named_modules()
                      if n and isinstance(m, (Linear, Conv2d))
                      and re.fullmatch(target_modules, n))
        if not names:
            raise ValueError(f"target_modules regex {target_modules!r} matches no Linear or "
                             f"Conv2d module of {type(model).__name__}")
        return names
    if not isinstance(target_modules, list) or not all(isinstance(t, str) for t in
                                                       target_modules):
        raise ValueError(f"target_modules must be a list of names or a regex string, got "
                         f"{target_modules!r}")
    return tuple(target_modules)


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

    config = read_peft_config(directory)
    saved = [s for s in (config.get("modules_to_save") or []) if isinstance(s, str)]
    present = [n for n, _ in model.named_modules() if n]
    saved = sorted({s for s in saved if any(n == s or n.endswith("." + s) for n in present)})
    cfg = LoRAConfig(r=int(config["r"]), alpha=float(config["lora_alpha"]),
                     dropout=float(config.get("lora_dropout") or 0.0),
                     target=_targets(model, config["target_modules"]),
                     modules_to_save=tuple(saved))
    state = load(Path(directory) / ADAPTER_WEIGHTS)
    apply_lora(model, cfg, adapter_name)
    wanted = [f"{_PREFIX}{n}.{f}.weight" for n in _lora_modules(model, adapter_name)
              for f in ("lora_A", "lora_B")]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{directory}: {ADAPTER_WEIGHTS} lacks {len(missing)} LoRA factors "
                         f"the config asks for, e.g. {missing[:3]}")
    load_adapter_state_dict(model, state, adapter_name)  # names and shapes checked there
    return model
