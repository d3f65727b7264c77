"""`minitl export`: turn a BERT backbone plus a LoRA adapter in PEFT layout into a checkpoint
other tools load.

    minitl export --backbone DIR_OR_ASSET --adapter ADAPTER_DIR --merge --out merged/
    minitl export --backbone DIR_OR_ASSET --adapter ADAPTER_DIR --out adapter/

With --merge, DIR receives a plain Hugging Face BERT checkpoint (config.json +
model.safetensors) whose weights have the LoRA update merged in (W + alpha/r * B A), loadable
by minitl's and transformers' `from_pretrained` with no LoRA code at all. Without it, DIR
receives the adapter again in PEFT layout, rewritten by minitl after loading and checking it
against the backbone (every tensor matched to a module and shape-checked).

The adapter's `task_type` picks the model: SEQ_CLS a sequence classifier (the number of
labels read from the saved `classifier`), TOKEN_CLS a token classifier, anything else the
bare encoder.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from minitl.cli.args import UsageError, check_output_dir, user_errors


def build_model(backbone: str, adapter: str) -> tuple[Any, dict[str, Any]]:
    """The backbone as the model the adapter was trained on, with the adapter loaded."""
    from minitl.io import read_header
    from minitl.io.peft import ADAPTER_WEIGHTS, load_peft_adapter, read_peft_config
    from minitl.models.bert import Bert, BertForSequenceClassification, BertForTokenClassification

    config = read_peft_config(adapter)
    task = config.get("task_type")
    if task in ("SEQ_CLS", "TOKEN_CLS"):
        # the head's size from the file's header; the tensors are read once, by the loader
        head = [v["shape"] for k, v in read_header(f"{adapter}/{ADAPTER_WEIGHTS}").items()
                if k.endswith("classifier.weight")]
        if not head:
            raise ValueError(f"{adapter}: task_type {task} but the adapter holds no "
                             f"classifier.weight (modules_to_save)")
        num_labels = head[0][0]
        cls = BertForSequenceClassification if task == "SEQ_CLS" else BertForTokenClassification
        model = cls.from_pretrained(backbone, num_labels=num_labels)
    else:
        model = Bert.from_pretrained(backbone)
    load_peft_adapter(model, adapter)
    model.eval()
    return model, config


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before the backbone loads, not after
    for flag, source in (("--backbone", args.backbone), ("--adapter", args.adapter)):
        if os.path.isdir(source) and os.path.realpath(source) == os.path.realpath(args.out):
            raise UsageError(f"--out {args.out!r} is the {flag} directory: its files would be "
                             "overwritten; write the export somewhere else")
    from minitl.io.peft import save_peft_adapter
    from minitl.transfer import merge_and_unload

    # What goes wrong here is in the files the user named: missing, corrupt, or an adapter
    # that does not fit this backbone (shape mismatches come up as RuntimeError).
    with user_errors(FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError,
                     RuntimeError, KeyError, usage=False):
        model, config = build_model(args.backbone, args.adapter)
    targets = config["target_modules"]
    if args.merge:
        merge_and_unload(model)
        model.save_pretrained(args.out)
        print(f"export: merged LoRA r={config['r']} alpha={config['lora_alpha']} on {targets} "
              f"into {type(model).__name__}; wrote {args.out}/config.json and "
              f"{args.out}/model.safetensors")
    else:
        save_peft_adapter(model, args.out, task_type=config.get("task_type"),
                          base_model_name_or_path=config.get("base_model_name_or_path"))
        print(f"export: LoRA r={config['r']} on {targets} checked against {args.backbone}; "
              f"wrote {args.out}/adapter_config.json and {args.out}/adapter_model.safetensors")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--backbone", required=True, metavar="DIR_OR_ASSET",
                   help="the base model: a Hugging Face-layout BERT directory or an asset name "
                        "(minilm-l6)")
    p.add_argument("--adapter", required=True, metavar="ADAPTER_DIR",
                   help="LoRA adapter directory in PEFT layout (adapter_config.json + "
                        "adapter_model.safetensors)")
    p.add_argument("--merge", action="store_true",
                   help="write a plain checkpoint with the LoRA update merged into the weights")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
