"""`minitl finetune --backbone smollm2-135m ...`: the LLM side of `minitl finetune`.

A GGUF LLaMA-architecture backbone (the smollm2-135m asset, a .gguf file or a folder holding
one) runs minitl.recipes.llm instead of the encoder recipes:

    minitl finetune --backbone smollm2-135m --data movie-reviews --labels 256 --strategy lora \\
        --out runs/smol-lora
    minitl finetune --backbone smollm2-135m --data movie-reviews --labels 0 \\
        --strategy zero-shot --out runs/smol-zs
    minitl finetune --backbone smollm2-135m --data movie-dialog --strategy lora --out runs/dlg

movie-reviews is answered as an instruction ("positive" / "negative" after the chat-template
prompt); movie-dialog is causal-LM adaptation scored by perplexity. The base stays in its
4-bit blocks; only LoRA factors train. DIR receives metrics.json, ledger.json (general-text
perplexity before and after) and, for lora, adapter.safetensors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Options of the encoder recipes with no meaning for the LLM recipe, and their defaults:
# giving one with another value is a usage error rather than a silent no-op.
ENCODER_ONLY = {"ewc": 0.0, "replay": 0.0, "head_lr": None, "no_select": False,
                "max_length": None, "adapter_bottleneck": 32, "prompt_tokens": 8,
                "unlabeled": 0, "source_lines": 200, "log_dir": None}


def is_llm_backbone(name: str) -> bool:
    """True for a GGUF model: an asset whose file is a .gguf, a .gguf path, or a folder
    holding a .gguf file and no encoder checkpoint."""
    from minitl import assets

    p = Path(name)
    if p.suffix == ".gguf":
        return True
    if p.is_dir():
        return any(p.glob("*.gguf")) and not (p / "config.json").is_file()
    if not p.exists() and name in assets.list_assets():
        return any(f.name.endswith(".gguf") for f in assets.info(name).files)
    return False


def run(args: argparse.Namespace) -> int:
    from minitl.cli.args import UsageError, check_output_dir, user_errors
    from minitl.recipes.llm import STRATEGIES, TASKS, LLMConfig, run_llm_finetune

    flag = {k: "--" + k.replace("_", "-") for k in ENCODER_ONLY}
    given = [flag[k] for k, default in ENCODER_ONLY.items() if getattr(args, k) != default]
    if given:
        raise UsageError(f"{', '.join(given)} apply to encoder backbones only, not to the "
                         f"LLM {args.backbone}")
    if args.strategy not in STRATEGIES:
        raise UsageError(f"an LLM backbone takes --strategy {' or '.join(STRATEGIES)}, "
                         f"not {args.strategy}")
    if args.data not in TASKS:
        raise UsageError(f"an LLM backbone fine-tunes on {' or '.join(TASKS)}, not {args.data}")
    if args.data == "movie-dialog" and (args.strategy != "lora" or args.labels is not None):
        raise UsageError("movie-dialog is language modelling: --strategy lora, no --labels")
    if args.strategy == "zero-shot" and args.labels not in (None, 0):
        raise UsageError("zero-shot trains nothing: give --labels 0 (or leave it out)")
    if args.strategy == "lora" and args.labels in (0, 1):
        raise UsageError(f"--labels {args.labels} leaves too little to train lora on; "
                         "give at least 2")
    check_output_dir(args.out)
    defaults = LLMConfig()
    cfg = LLMConfig(lr=args.lr or defaults.lr, batch_size=args.batch_size or defaults.batch_size,
                    r=args.lora_r, eval_size=args.eval_size, max_steps=args.max_steps,
                    lm_steps=args.steps or defaults.lm_steps, general_text=args.source_text)
    if args.steps is not None and args.data == "movie-reviews":
        raise UsageError("the LLM classifier trains for whole passes over the labels; cap it "
                         "with --max-steps instead of --steps")
    labels = None if args.strategy == "zero-shot" else args.labels
    print(f"finetune: {args.strategy} on {args.data} with {args.backbone} (4-bit base, "
          f"{'all' if labels is None else labels} labels, {args.eval_split} split)", flush=True)
    from minitl.io.gguf import read_gguf, resolve_gguf

    with user_errors(FileNotFoundError):
        gguf = resolve_gguf(args.backbone)
    with user_errors(ValueError, OSError, usage=False):  # a damaged file: exit 1, one line
        read_gguf(gguf)  # header, metadata and tensor table checked before any work starts
    with user_errors(KeyError, FileNotFoundError):
        result = run_llm_finetune(args.backbone, args.data, args.strategy, labels=labels,
                                  seed=args.seed, eval_split=args.eval_split, config=cfg,
                                  out=args.out, root=args.data_root,
                                  log=(lambda s: None) if args.quiet else print)
    before = ", ".join(f"{k} {v:.3f}" for k, v in result.baseline.items())
    after = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    recs = result.ledger.get("records", [])
    ppl = (f"  general-text ppl {recs[0]['source']['general_ppl']:.2f} -> "
           f"{recs[-1]['source']['general_ppl']:.2f}" if recs else "")
    print(f"{args.eval_split}: {after} (base model: {before})  trainable {result.trainable:,} "
          f"of {result.total:,}  {result.seconds:.1f} s{ppl}")
    written = (["adapter.safetensors"] if result.strategy == "lora" else []) + [
        "ledger.json", "metrics.json"]
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0
