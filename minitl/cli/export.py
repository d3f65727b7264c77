"""`minitl export`: turn what minitl trained into a checkpoint other tools load.

    minitl export --model RUN_DIR --out hf/                  # a `minitl finetune` directory
    minitl export --model RUN_DIR --out peft/ --no-merge     # LoRA kept as a PEFT adapter
    minitl export --backbone DIR_OR_ASSET --adapter ADAPTER_DIR [--merge] --out DIR

From a finetune directory (--model), DIR receives a Hugging Face BERT encoder
(config.json with id2label, model.safetensors, the tokenizer) with any LoRA update merged
into its weights, and the head as classifier.safetensors (`weight` (C, D), `bias` (C,)).
The classifier mean-pools the encoder's last hidden state over the attention mask,
L2-normalises it and applies the head; in `transformers` that is

    enc = AutoModel.from_pretrained(DIR); tok = AutoTokenizer.from_pretrained(DIR)
    b = tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    h = enc(**b).last_hidden_state; m = b["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    logits = e @ head["weight"].T + head["bias"]  # head = safetensors.torch.load_file(...)

(MAX_LENGTH: config.json's minitl.max_length.) With --no-merge a LoRA directory stays an
adapter: adapter_config.json + adapter_model.safetensors in PEFT layout for the bare
encoder (`PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE), DIR)`), plus the
head and the tokenizer. Bottleneck adapters, soft prompts and bag-of-words models have no
`transformers` counterpart; those directories load with `minitl.load_finetuned`.

With --backbone and --adapter (a LoRA adapter in PEFT layout), --merge writes a plain
Hugging Face BERT checkpoint with the update merged in (W + alpha/r * B A); without it, the
adapter again, rewritten by minitl after loading and checking it against the backbone. The
adapter's `task_type` picks the model: SEQ_CLS a sequence classifier (the number of labels
read from the saved `classifier`), TOKEN_CLS a token classifier, anything else the encoder.
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


HEAD_FILE = "classifier.safetensors"


def export_finetuned(model_dir: str, out: str, merge: bool, backbone: str | None) -> str:
    """A finetune directory as a Hugging Face directory (see the module docstring);
    returns what was written, in words."""
    import json
    import shutil

    from minitl import io
    from minitl.io.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS
    from minitl.recipes.finetuned import copy_model, load_finetuned, weights_kind
    from minitl.transfer import merge_and_unload

    clf = load_finetuned(model_dir, backbone=backbone)
    kind = weights_kind(clf.strategy)
    if kind in ("bow", "adapter"):
        raise ValueError(f"{model_dir}: a {clf.strategy} model has no Hugging Face "
                         f"counterpart; load it with minitl.load_finetuned")
    model = copy_model(clf)
    section = clf.config["minitl"]
    config = {**model.bert.config.to_hf_dict(), "architectures": ["BertModel"],
              "id2label": clf.config["id2label"], "label2id": clf.config["label2id"],
              "minitl": {**section, "head": HEAD_FILE}}
    os.makedirs(out, exist_ok=True)
    if kind == "peft" and not merge:
        # the finetune adapter names SentenceClassifier modules (bert.*); the export's base
        # is the bare encoder, and the head travels beside it, not in modules_to_save
        src = os.path.join(model_dir, ADAPTER_CONFIG)
        with open(src, encoding="utf-8") as f:
            adapter = json.load(f)
        adapter.pop("minitl_classifier", None)  # pooling and head: in config.json here
        adapter.update(modules_to_save=None, task_type="FEATURE_EXTRACTION",
                       base_model_name_or_path=backbone or section.get("backbone"))
        prefix, tensors = "base_model.model.", {}
        for k, v in io.load(os.path.join(model_dir, ADAPTER_WEIGHTS)).items():
            if k.startswith(prefix + "bert."):
                tensors[prefix + k[len(prefix + "bert."):]] = v
        io.save(tensors, os.path.join(out, ADAPTER_WEIGHTS), metadata={"format": "pt"})
        io.write_json(os.path.join(out, ADAPTER_CONFIG), adapter, sort_keys=True)
        what = (f"{ADAPTER_CONFIG} + {ADAPTER_WEIGHTS} (LoRA r={adapter['r']} for the bare "
                f"encoder {adapter['base_model_name_or_path']})")
        config["minitl"]["weights"] = ADAPTER_WEIGHTS
        io.write_json(os.path.join(out, "config.json"), config, sort_keys=True)
    else:
        if kind == "peft":
            merge_and_unload(model)
        model.bert.save_pretrained(out)  # config.json + model.safetensors, BertModel names
        io.write_json(os.path.join(out, "config.json"), config, sort_keys=True)
        what = ("config.json + model.safetensors (the encoder"
                f"{', LoRA merged' if kind == 'peft' else ''})")
    io.save({"weight": model.classifier.weight, "bias": model.classifier.bias},
            os.path.join(out, HEAD_FILE), metadata={"format": "pt"})
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(model_dir, name), os.path.join(out, name))
    return (f"{what}, {HEAD_FILE} (the {clf.strategy} head, {len(clf.label_names)} labels), "
            f"the tokenizer; mean pooling + L2 norm + head: see `minitl export --help`")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before the backbone loads, not after
    if args.model is not None:
        if args.adapter is not None:
            raise UsageError("give --model (a finetune directory) or --adapter, not both")
        if os.path.realpath(args.model) == os.path.realpath(args.out):
            raise UsageError(f"--out {args.out!r} is the --model directory; write the export "
                             "somewhere else")
        with user_errors(FileNotFoundError, NotADirectoryError, ValueError, RuntimeError,
                         KeyError, usage=False):
            what = export_finetuned(args.model, args.out, args.merge is not False,
                                    args.backbone)
        print(f"export: wrote {what} to {args.out}")
        return 0
    if args.adapter is None or args.backbone is None:
        raise UsageError("give --model RUN_DIR (from minitl finetune), or --backbone and "
                         "--adapter")
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
    if args.merge:  # True only when given: an adapter is re-written unless asked to merge
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
    p.add_argument("--model", default=None, metavar="RUN_DIR",
                   help="a directory written by `minitl finetune --out` (any strategy with an "
                        "encoder)")
    p.add_argument("--backbone", default=None, metavar="DIR_OR_ASSET",
                   help="the base model: a Hugging Face-layout BERT directory or an asset name "
                        "(minilm-l6); with --model, only where the run's backbone has moved")
    p.add_argument("--adapter", default=None, metavar="ADAPTER_DIR",
                   help="LoRA adapter directory in PEFT layout (adapter_config.json + "
                        "adapter_model.safetensors)")
    merge = p.add_mutually_exclusive_group()
    merge.add_argument("--merge", action="store_true", default=None,
                       help="merge the LoRA update into the weights (with --model: the "
                            "default)")
    merge.add_argument("--no-merge", dest="merge", action="store_false",
                       help="with --model: keep a LoRA update as a PEFT adapter")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
