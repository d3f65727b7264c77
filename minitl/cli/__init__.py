"""Command line: `minitl <command>`. Each command lives in its own module with two functions,
`add_arguments(parser)` and `run(args) -> int`, and is registered in COMMANDS.

`run` reports what the user can fix by raising `minitl.cli.args.UsageError` / `UserError`
(see that module); `run_command` prints those and the other errors a user can act on as one
line, `minitl <command>: error: ...`, with exit status 2 (the command could not start as
asked), 1 (it failed while running) or 130 (Ctrl-C). Every other exception is a bug and
keeps its traceback; with MINITL_DEBUG=1 every error does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from minitl import __version__
from minitl.cli.args import UsageError, describe, exit_code

# command name -> (module under minitl.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "fine-tune a real pretrained encoder on real sentences, eight ways"),
    "finetune": ("finetune", "fine-tune a pretrained backbone on a dataset with one strategy"),
    "pretrain": ("pretrain", "pretrain a model from scratch on an offline corpus or images"),
    "predict": ("predict", "label sentences with a model minitl finetune wrote"),
    "export": ("export", "turn a finetune directory into a Hugging Face checkpoint"),
    "generate": ("generate", "stream a reply from a GGUF LLM (SmolLM2-135M) to a prompt"),
    "bench": ("bench", "run the benchmarks against PyTorch / numpy and print their tables"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitl", description="minitl: transfer learning from first principles.",
        epilog="Errors are one line: exit status 2 for a wrong command line, 1 for a bad "
               "input file or a failed run, 130 for Ctrl-C. MINITL_DEBUG=1 shows the "
               "traceback of every error.")
    # argparse's version action prints and exits 0 before the required COMMAND is checked.
    parser.add_argument("--version", action="version", version=f"minitl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"minitl.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def _check_environment() -> None:
    """MINITL_KERNELS, MINITL_CPU_ISA and MINITL_SHARE_BLAS_POOL are read when the first kernel
    runs, possibly deep in a command (or in a benchmark's own process), MINITL_RETAIN_MEMORY at
    import (where a misspelling only warns): a misspelt value is a usage error up front."""
    from minitl import memory
    from minitl.backend import cpu, kernel_mode

    try:
        kernel_mode()
        cpu.cpu_isa_setting()
        cpu.share_blas_pool_setting()
        memory.retain_memory_setting()
    except ValueError as e:
        raise UsageError(str(e)) from e


def run_command(prog: str, func: Callable[[argparse.Namespace], int],
                args: argparse.Namespace) -> int:
    """`func(args)`, with the errors a user can act on printed as one line on stderr and
    turned into an exit status; a bug's traceback (every traceback with MINITL_DEBUG=1)
    goes through."""
    try:
        _check_environment()
        return int(func(args))
    except BaseException as e:
        code = exit_code(e)
        if code is None or os.environ.get("MINITL_DEBUG", "") not in ("", "0"):
            raise
        sys.stdout.flush()  # what the command printed so far comes before the error
        print(f"{prog}: error: {describe(e)}", file=sys.stderr, flush=True)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"minitl {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
