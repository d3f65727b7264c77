"""Starting N ranks: re-run the current command under the venv's `mpiexec`.

`minitl pretrain --nproc 2 ...` calls `relaunch_under_mpiexec(2, argv)`: outside an MPI job it
runs `mpiexec -n 2 python -m minitl.cli <argv>` and returns its exit status; inside one (the
ranks themselves, recognised by the launcher's environment) it returns None and the command
goes on as one rank. The `mpich` wheel installs `mpiexec` beside the venv's python, so that
one is preferred to whatever MPI is on PATH: mpi4py must talk to the MPI it was built for.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# What the launchers set in each rank: MPICH/hydra (PMI_*), Open MPI, PMIx, torchrun-style.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID")


def under_launcher() -> bool:
    """True in a process an MPI launcher started (a rank of a job)."""
    return any(os.environ.get(name, "") != "" for name in _RANK_VARIABLES)


def launcher_world_size() -> int | None:
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE"):
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return None


def find_mpiexec() -> str | None:
    """The venv's mpiexec (next to this python), else the first one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


def mpiexec_command(nproc: int, argv: list[str], threads_per_rank: int | None = None
                    ) -> list[str]:
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise FileNotFoundError("no mpiexec found: pip install 'minitl[distributed]' "
                                "(mpi4py, mpich) in this environment")
    env_args: list[str] = []
    if threads_per_rank is not None:  # hydra passes these on to every rank
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env_args += ["-genv", name, str(threads_per_rank)]
    return [mpiexec, "-n", str(nproc), *env_args, sys.executable, *argv]


def relaunch_under_mpiexec(nproc: int, argv: list[str],
                           threads_per_rank: int | None = None) -> int | None:
    """Outside an MPI job: run `python <argv>` as `nproc` ranks and return the job's exit
    status. Inside one: None (this process is a rank; carry on). `argv` is what follows
    python, e.g. ["-m", "minitl.cli", "pretrain", ...]."""
    if under_launcher():
        return None
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    return subprocess.call(mpiexec_command(nproc, argv, threads_per_rank))


def flags_of(args: argparse.Namespace,
             add_arguments: Callable[[argparse.ArgumentParser], None]) -> list[str]:
    """The command-line flags that give `args` back from a parser built by `add_arguments`
    (only those that differ from their defaults): what the ranks of a relaunched command
    are given."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            out.append(flag)
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out
