"""Argument checks for `minitl <command>` and the errors a command reports to its user.

Validators are argparse `type=` functions: each converts the string and checks its range,
so a bad value stops the command at parse time with argparse's own two lines (usage, then
`minitl <command>: error: argument --lr: must be a finite number > 0, got 'inf'`) and exit
status 2, before anything is loaded or trained:

    positive_int       sizes, steps, intervals (0 refused: `--max-steps 0` is no run at all)
    nonnegative_int    counts where 0 means something documented (0: off, keep all)
    positive_float     learning rates, epochs
    nonnegative_float  weight decay, clipping norms (0: off)
    finite_float       any real number, nan and +-inf refused (as by all the float ones)
    probability        dropout-like rates in [0, 1)
    int_range(lo, hi) / float_range(lo, hi, lo_open=, hi_open=) for other ranges

Errors a command raises on purpose:

- `UsageError`: the command line asks for the impossible (a value out of range, flags that
  contradict each other, a name that does not exist, an output path of the wrong kind);
  printed as one line, exit status 2, like argparse's own errors.
- `UserError`: the command line is fine but what it names is not (a corrupt or mismatched
  input file), or the run failed for a reason outside minitl; one line, exit status 1.

`minitl.cli.main` (and `minitl.cli.run_command`, for a command module's own `main`) print
these, `minitl.train.NonFiniteLossError` (exit 1), an `OSError` on a named path (a file
not found, a directory where a file belongs, no permission; exit 1) and Ctrl-C (exit 130)
as `minitl <command>: error: <one line>`. Anything else is a bug in minitl and keeps its
traceback; `MINITL_DEBUG=1` shows the traceback of every error.

A `ValueError` means bad input only where the command says so: wrap the steps that read
what the user named (config, data, checkpoints) in `user_errors(...)`, which turns the
listed exception types into a `UsageError` (or a `UserError` with `usage=False`):

    from minitl.cli import run_command
    from minitl.cli.args import (UsageError, check_output_dir, positive_int, probability,
                                 user_errors)

    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-steps", type=positive_int, default=None, help="...")
        p.add_argument("--dropout", type=probability, default=0.1, help="...")

    def run(args: argparse.Namespace) -> int:
        if args.labels is not None and args.labels < 2:
            raise UsageError(f"--labels must be at least 2, got {args.labels}")
        check_output_dir(args.out, "--out")  # before hours of training, not after
        with user_errors(ValueError, KeyError, FileNotFoundError, usage=False):
            task = load_task(args.data)  # a bad data file is the user's to fix: exit 1
        train(task)  # a ValueError in here is a bug: it keeps its traceback
        return 0

    def main(argv: list[str] | None = None) -> int:  # a module run on its own
        parser = argparse.ArgumentParser(prog="minitl finetune")
        add_arguments(parser)
        return run_command("minitl finetune", run, parser.parse_args(argv))

Only the standard library is imported at the top: the parser is built before numpy loads.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["UsageError", "UserError", "check_output_dir", "check_output_file", "describe",
           "finite_float", "float_range", "int_range", "nonnegative_float", "nonnegative_int",
           "positive_float", "positive_int", "probability", "user_errors"]


class UserError(Exception):
    """A failure the user can fix, not a bug (a bad input file, a failed run): one line on
    stderr, exit status 1."""

    exit_code = 1


class UsageError(UserError):
    """The command line itself is wrong (values, combinations, names, output paths): exit
    status 2, as for argparse's own errors."""

    exit_code = 2


# ---- argparse `type=` validators --------------------------------------------------------------

def _number(kind: type, text: str) -> float:
    try:
        return kind(text)  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """A validator for integers in [lo, hi] (None: unbounded on that side)."""

    def parse(text: str) -> int:
        value = int(_number(int, text))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            want = (f">= {lo}" if hi is None else f"<= {hi}" if lo is None
                    else f"in [{lo}, {hi}]")
            raise argparse.ArgumentTypeError(f"must be an integer {want}, got {text!r}")
        return value

    parse.__name__ = "int"  # what argparse names in its own messages
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """A validator for finite numbers between lo and hi (closed ends unless `*_open`);
    nan and +-inf are always refused, since no setting here means anything with them."""

    def parse(text: str) -> float:
        value = float(_number(float, text))
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if not math.isfinite(value) or below or above:
            left = "" if lo is None else f"{'(' if lo_open else '['}{lo:g}, "
            right = "" if hi is None else f"{hi:g}{')' if hi_open else ']'}"
            want = ("" if lo is None and hi is None else
                    f" {'>' if lo_open else '>='} {lo:g}" if hi is None else
                    f" {'<' if hi_open else '<='} {hi:g}" if lo is None else
                    f" in {left}{right}")
            raise argparse.ArgumentTypeError(f"must be a finite number{want}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


positive_int = int_range(1)  # sizes, steps, intervals
nonnegative_int = int_range(0)  # counts where 0 has a documented meaning (0: off / keep all)
positive_float = float_range(0.0, lo_open=True)  # learning rates, epochs
nonnegative_float = float_range(0.0)  # weight decay, clipping norms (0: off)
finite_float = float_range()  # any real number
probability = float_range(0.0, 1.0, hi_open=True)  # dropout-like rates in [0, 1)


# ---- output paths -----------------------------------------------------------------------------

def check_output_file(path: str | os.PathLike[str], what: str = "output") -> None:
    """Raise UsageError unless a file can be written at `path` (not a directory; its
    directory existing or creatable). Call it before the work that produces the file."""
    from minitl.train.paths import OutputPathError
    from minitl.train.paths import check_output_file as check

    with user_errors(OutputPathError):
        check(path, what)


def check_output_dir(path: str | os.PathLike[str], what: str = "output directory") -> None:
    """Raise UsageError unless `path` is, or can be made, a writable directory."""
    from minitl.train.paths import OutputPathError
    from minitl.train.paths import check_output_dir as check

    with user_errors(OutputPathError):
        check(path, what)


# ---- turning exceptions into one line ---------------------------------------------------------

def describe(error: BaseException) -> str:
    """One line for the user: no repr quotes around a KeyError, an OSError as its reason
    and path, no line breaks."""
    if isinstance(error, OSError) and error.strerror:
        names = [repr(n) for n in (error.filename, error.filename2) if n is not None]
        text = f"{error.strerror}: {' -> '.join(names)}" if names else error.strerror
    elif isinstance(error, KeyboardInterrupt):
        text = "interrupted"
    elif isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


@contextmanager
def user_errors(*types: type[BaseException], usage: bool = True,
                prefix: str | None = None) -> Iterator[None]:
    """Inside the block, an exception of one of `types` is the user's input at fault: it
    is re-raised as a UsageError (or a UserError with `usage=False`) carrying its message,
    with `prefix: ` in front if given. The original stays chained for MINITL_DEBUG."""
    try:
        yield
    except types as e:
        if isinstance(e, UserError):
            raise
        text = describe(e)
        cls = UsageError if usage else UserError
        raise cls(f"{prefix}: {text}" if prefix else text) from e


def exit_code(error: BaseException) -> int | None:
    """The exit status for an error the user can act on; None for a bug (keep the
    traceback)."""
    if isinstance(error, UserError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return 130  # 128 + SIGINT, what a shell reports for Ctrl-C
    if isinstance(error, OSError) and (error.filename is not None or
                                       error.errno in (errno.ENOSPC, errno.EDQUOT)):
        return 1
    trainer = sys.modules.get("minitl.train.trainer")  # loaded if it raised: no import here
    if trainer is not None and isinstance(error, trainer.NonFiniteLossError):
        return 1
    return None
