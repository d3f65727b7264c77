"""Commands that run data-parallel (`--nproc N`): start the ranks, and run one.

    if args.nproc > 1 or in_job():
        if not in_job():
            return relaunch(args.nproc, ["-m", "minitl.cli", "finetune"], args, add_arguments)
        return as_rank("minitl finetune", args.nproc, lambda rank, world: train(...))

`relaunch` re-runs the command under the venv's mpiexec with N ranks (the cores shared out
as threads) and returns the job's exit status. `as_rank` joins the MPI process group, checks
that mpiexec started N ranks, and runs the body; a user error on any rank is printed with the
rank's number and ends every rank (the others would otherwise wait in an all-reduce).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from minitl.cli.args import UsageError, user_errors


def in_job() -> bool:
    """True in a process an MPI launcher started (a rank of a job)."""
    from minitl.distributed.launch import under_launcher

    return under_launcher()


def relaunch(nproc: int, command: list[str], args: argparse.Namespace,
             add_arguments: Callable[[argparse.ArgumentParser], None]) -> int:
    """Run `python <command> <args' flags>` as `nproc` ranks; the job's exit status."""
    from minitl.distributed.launch import flags_of, relaunch_under_mpiexec

    threads = max(1, (os.cpu_count() or 1) // nproc)
    with user_errors(FileNotFoundError, usage=False):
        code = relaunch_under_mpiexec(nproc, [*command, *flags_of(args, add_arguments)],
                                      threads)
    return int(code or 0)


def as_rank(prog: str, nproc: int, body: Callable[[int, int], int]) -> int:
    """`body(rank, world)` as one rank of an `nproc`-rank job, inside the process group."""
    import minitl.distributed as dist

    with user_errors(ImportError, usage=False):
        dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if world != nproc:
            raise UsageError(f"--nproc {nproc} but mpiexec started {world} ranks")
        code = body(rank, world)
    except BaseException as e:
        from minitl.cli.args import describe, exit_code
        from minitl.distributed.group import group

        status = exit_code(e)
        if status is None:
            raise  # a bug: its traceback, then the excepthook aborts the job
        print(f"{prog}: error: rank {rank}: {describe(e)}", file=sys.stderr, flush=True)
        group().abort(status)
        raise
    dist.destroy_process_group()
    return code
