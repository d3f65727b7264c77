"""Command line: `minitl <command>`. Each command lives in its own module with two functions,
`add_arguments(parser)` and `run(args) -> int`, and is registered in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# command name -> (module under minitl.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "fine-tune a real pretrained encoder on real sentences, eight ways"),
    "finetune": ("finetune", "fine-tune a pretrained backbone on a dataset with one strategy"),
    "pretrain": ("pretrain", "pretrain a model from scratch on an offline corpus or images"),
    "export": ("export", "write a LoRA adapter in PEFT layout, or merged into a plain checkpoint"),
    "bench": ("bench", "run the benchmarks against PyTorch / numpy and print their tables"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitl", description="minitl: transfer learning from first principles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"minitl.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
