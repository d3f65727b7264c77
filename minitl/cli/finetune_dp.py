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
from collections.abc import Callable

from minitl.cli.args import UsageError


def run(args: argparse.Namespace, finetune: Callable[..., int],
        add_arguments: Callable[[argparse.ArgumentParser], None]) -> int:
    from minitl.cli.finetune import DATA_PARALLEL
    from minitl.cli.ranks import as_rank, in_job, relaunch

    if args.strategy not in DATA_PARALLEL:
        raise UsageError(f"--nproc trains the encoder data-parallel: strategy "
                         f"{', '.join(DATA_PARALLEL)}, not {args.strategy}")
    if not in_job():
        return relaunch(args.nproc, ["-m", "minitl.cli", "finetune"], args, add_arguments)

    def train(rank: int, world: int) -> int:
        if rank != 0:
            args.quiet, args.log_dir = True, None
        return finetune(args, write=rank == 0)

    return as_rank("minitl finetune", args.nproc, train)
