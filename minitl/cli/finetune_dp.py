"""`minitl finetune --nproc N`: the encoder recipe trained data-parallel on N MPI ranks.

Outside an MPI job the command re-runs itself under the venv's `mpiexec` (N ranks, the
cores shared out as threads); each rank then joins the process group, and the recipe's
training loop (recipes.training.train_classifier) wraps the classifier in
DistributedDataParallel and gives each rank rows rank::N of every batch, so the averaged
gradient is the whole batch's. Everything else (the label sample, the zero-shot head, model
selection, scoring) is deterministic and runs alike on every rank; rank 0 alone prints and
writes the finetune directory. A rank that fails ends the job with its error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from minitl.cli.args import UsageError, user_errors


def run(args: argparse.Namespace, finetune: Callable[..., int],
        add_arguments: Callable[[argparse.ArgumentParser], None]) -> int:
    from minitl.cli.finetune import DATA_PARALLEL
    from minitl.distributed.launch import flags_of, relaunch_under_mpiexec, under_launcher

    if args.strategy not in DATA_PARALLEL:
        raise UsageError(f"--nproc trains the encoder data-parallel: strategy "
                         f"{', '.join(DATA_PARALLEL)}, not {args.strategy}")
    if not under_launcher():
        threads = max(1, (os.cpu_count() or 1) // args.nproc)
        with user_errors(FileNotFoundError, usage=False):
            code = relaunch_under_mpiexec(
                args.nproc, ["-m", "minitl.cli", "finetune", *flags_of(args, add_arguments)],
                threads)
        return int(code or 0)

    import minitl.distributed as dist

    with user_errors(ImportError, usage=False):
        dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if world != args.nproc:
            raise UsageError(f"--nproc {args.nproc} but mpiexec started {world} ranks")
        if rank != 0:
            args.quiet, args.log_dir = True, None
        code = finetune(args, write=rank == 0)
    except BaseException as e:
        # a rank out with an error would leave the others waiting in an all-reduce
        from minitl.cli.args import describe, exit_code
        from minitl.distributed.group import group

        status = exit_code(e)
        if status is None:
            raise  # a bug: its traceback, then the excepthook aborts the job
        print(f"minitl finetune: error: rank {rank}: {describe(e)}", file=sys.stderr,
              flush=True)
        group().abort(status)
        raise
    dist.destroy_process_group()
    return code
