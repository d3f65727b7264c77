"""The default process group and the collectives on minitl Tensors (PyTorch's names).

    init_process_group(backend="mpi")   # under `mpiexec -n N python train.py`
    rank, world = get_rank(), get_world_size()
    all_reduce(t, op=ReduceOp.SUM)      # in place, on every rank
    broadcast(t, src=0); barrier(); all_gather(out_list, t)
    destroy_process_group()

A backend (minitl/distributed/mpi.py, minitl/distributed/nccl.py) works on arrays: numpy for
MPI, CuPy for NCCL. This module owns the one global group and the Tensor-level wrappers; a
Tensor's array is reduced in place when it is contiguous, else through a copy written back.

Every wait runs under a watchdog (`timeout`, default 300 s or $MINITL_DIST_TIMEOUT): a rank
that stops answering makes the others fail with `DistributedError` naming the operation,
never hang.
"""

from __future__ import annotations

import enum
import os
from datetime import timedelta
from typing import Any

from minitl.tensor import Tensor
from minitl.types import Array

__all__ = [
    "DistributedError",
    "ProcessGroup",
    "ReduceOp",
    "Work",
    "all_gather",
    "all_reduce",
    "barrier",
    "broadcast",
    "destroy_process_group",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_initialized",
]


class DistributedError(RuntimeError):
    """A collective failed: a rank died or did not answer within the timeout, or the ranks
    disagree (on the model, on the world size)."""


class ReduceOp(enum.Enum):
    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"  # SUM, then divided by the world size (MPI has no average)


class Work:
    """A collective in flight (what `async_op=True` returns). `wait()` blocks until it is
    done on this rank, then runs `then` (copy-back, division for AVG)."""

    def __init__(self, wait: Any, then: Any = None) -> None:
        self._wait, self._then, self._done = wait, then, False

    def wait(self) -> bool:
        if not self._done:
            self._wait()
            if self._then is not None:
                self._then()
            self._done = True
        return True

    def is_completed(self) -> bool:
        return self._done


class ProcessGroup:
    """What a backend provides: non-blocking collectives on contiguous arrays, each returning
    a callable that waits for it."""

    backend = "none"
    rank = 0
    size = 1
    timeout = 300.0

    def all_reduce(self, buf: Array, op: ReduceOp) -> Any:
        raise NotImplementedError

    def broadcast(self, buf: Array, src: int) -> Any:
        raise NotImplementedError

    def all_gather(self, buf: Array, out: Array) -> Any:
        """out (size, *buf.shape) receives every rank's buf, in rank order."""
        raise NotImplementedError

    def barrier(self) -> Any:
        raise NotImplementedError

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable `obj` (small: shapes, names, versions), in rank order."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        os._exit(code)

    def close(self) -> None:
        pass


_group: ProcessGroup | None = None


def default_timeout() -> float:
    return float(os.environ.get("MINITL_DIST_TIMEOUT", "300"))


def init_process_group(backend: str = "mpi", timeout: timedelta | float | None = None,
                       world_size: int = -1, rank: int = -1, **kwargs: Any) -> None:
    """Join the job this process was started in. `backend`: "mpi" (CPU ranks, mpi4py) or
    "nccl" (one GPU per rank, CuPy's NCCL; the NCCL id travels over MPI). Rank and world size
    come from the launcher (`mpiexec`); `rank=`/`world_size=` given here, or RANK/WORLD_SIZE
    in the environment, must agree with it. `timeout` bounds every wait (seconds or a
    timedelta)."""
    global _group
    if _group is not None:
        raise RuntimeError("trying to initialize the default process group twice")
    seconds = (timeout.total_seconds() if isinstance(timeout, timedelta)
               else default_timeout() if timeout is None else float(timeout))
    if backend == "mpi":
        from minitl.distributed.mpi import MPIProcessGroup

        group: ProcessGroup = MPIProcessGroup(seconds)
    elif backend == "nccl":
        from minitl.distributed.nccl import NCCLProcessGroup

        group = NCCLProcessGroup(seconds, **kwargs)
    else:
        raise ValueError(f"backend must be 'mpi' or 'nccl', got {backend!r}")
    want = {"rank": rank if rank >= 0 else _env_int("RANK"),
            "world size": world_size if world_size >= 0 else _env_int("WORLD_SIZE")}
    have = {"rank": group.rank, "world size": group.size}
    for what, value in want.items():
        if value is not None and value != have[what]:
            group.close()
            raise DistributedError(f"init_process_group: {what} {value} was asked for but "
                                   f"the launcher started this process as {what} {have[what]}")
    _group = group


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def is_initialized() -> bool:
    return _group is not None


def group() -> ProcessGroup:
    if _group is None:
        raise RuntimeError("Default process group has not been initialized, please make sure "
                           "to call init_process_group.")
    return _group


def get_rank() -> int:
    return group().rank


def get_world_size() -> int:
    return group().size


def get_backend() -> str:
    return group().backend


def destroy_process_group() -> None:
    global _group
    if _group is not None:
        _group.close()
        _group = None


# ---- collectives on Tensors -------------------------------------------------------------------

def _buffer(t: Tensor) -> tuple[Array, Any]:
    """A contiguous array to communicate through, and how to write it back into `t`."""
    data = t.data
    if data.flags.c_contiguous:
        return data, None
    buf = data.copy()  # a copy is C-contiguous (numpy and CuPy)

    def write_back() -> None:
        data[...] = buf

    return buf, write_back


def _finish(work: Work, async_op: bool) -> Work | None:
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, async_op: bool = False) -> Work | None:
    """Reduce `tensor` over all ranks, in place on each."""
    g = group()
    buf, write_back = _buffer(tensor)
    wait = g.all_reduce(buf, ReduceOp.SUM if op is ReduceOp.AVG else op)

    def then() -> None:
        if op is ReduceOp.AVG:
            buf[...] /= g.size
        if write_back is not None:
            write_back()

    return _finish(Work(wait, then), async_op)


def broadcast(tensor: Tensor, src: int = 0, async_op: bool = False) -> Work | None:
    """Overwrite `tensor` on every rank with rank `src`'s."""
    buf, write_back = _buffer(tensor)
    return _finish(Work(group().broadcast(buf, src), write_back), async_op)


def all_gather(tensor_list: list[Tensor], tensor: Tensor, async_op: bool = False) -> Work | None:
    """tensor_list[r] receives rank r's `tensor` (a list of world-size tensors of its shape)."""
    g = group()
    if len(tensor_list) != g.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors for a world "
                         f"of {g.size}")
    buf, _ = _buffer(tensor)
    xp_out = buf.__class__  # numpy.ndarray or cupy.ndarray
    out = xp_out((g.size, *buf.shape), dtype=buf.dtype)  # uninitialised, filled by the gather

    def then() -> None:
        for r, t in enumerate(tensor_list):
            t.data[...] = out[r]

    return _finish(Work(g.all_gather(buf, out), then), async_op)


def barrier(async_op: bool = False) -> Work | None:
    return _finish(Work(group().barrier()), async_op)
