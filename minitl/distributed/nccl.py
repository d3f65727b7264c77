"""The NCCL backend: one GPU per rank, collectives through CuPy's `cupy.cuda.nccl`.

The ranks find each other over MPI (the bootstrap group): rank 0 draws the NCCL unique id and
broadcasts it, as `torch.distributed` does through its store. Each rank takes the GPU of its
local rank on the node (MPI_LOCALRANKID, OMPI_COMM_WORLD_LOCAL_RANK or LOCAL_RANK, else the
global rank modulo the device count).

Collectives run on a stream of their own, after an event that orders them behind the work
already queued on the current stream (the backward that produced the gradients); `wait()`
polls an event recorded after the collective, so the watchdog can give up on a dead peer
(and then aborts the NCCL communicator, which frees the GPU side of the job).

Not run on a GPU yet: the tests drive this file through a stand-in `cupy.cuda.nccl` that
checks the calls (pointers, counts, dtypes, ops) on host arrays.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from minitl.distributed.group import DistributedError, ProcessGroup, ReduceOp
from minitl.types import Array


def _import_cupy() -> tuple[Any, Any]:
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as e:
        raise ImportError("the nccl backend needs CuPy built with NCCL: pip install "
                          "'minitl[cuda]' and a CUDA GPU per rank") from e
    return cupy, nccl


def _pointer(a: Array) -> int:
    data = a.data
    return int(data.ptr) if hasattr(data, "ptr") else int(a.ctypes.data)  # CuPy | host array


def local_rank(rank: int, n_devices: int) -> int:
    for name in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK"):
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return rank % max(n_devices, 1)


class NCCLProcessGroup(ProcessGroup):
    backend = "nccl"

    def __init__(self, timeout: float, bootstrap: ProcessGroup | None = None) -> None:
        cupy, nccl = _import_cupy()
        self.cupy, self.nccl = cupy, nccl
        if bootstrap is None:
            from minitl.distributed.mpi import MPIProcessGroup

            bootstrap = MPIProcessGroup(timeout)
        self.bootstrap = bootstrap
        self.rank, self.size, self.timeout = bootstrap.rank, bootstrap.size, timeout
        cupy.cuda.Device(local_rank(self.rank, cupy.cuda.runtime.getDeviceCount())).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = bootstrap.all_gather_object(uid)[0]
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._ops = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.PRODUCT: nccl.NCCL_PROD,
                     ReduceOp.MIN: nccl.NCCL_MIN, ReduceOp.MAX: nccl.NCCL_MAX}
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.float16): nccl.NCCL_FLOAT16,
                       np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64,
                       np.dtype(np.uint8): nccl.NCCL_UINT8}
        self.broken = False

    def _dtype(self, buf: Array) -> int:
        kind = self._types.get(np.dtype(buf.dtype))
        if kind is None:
            raise TypeError(f"nccl: no NCCL type for {buf.dtype}")
        return kind  # type: ignore[no-any-return]

    def _launch(self, what: str, call: Any) -> Any:
        """Order the collective after the current stream's work, run it on ours, and return
        a wait that polls its completion under the watchdog."""
        ready = self.cupy.cuda.Event(disable_timing=True)
        ready.record(self.cupy.cuda.get_current_stream())
        self.stream.wait_event(ready)
        call(self.stream.ptr)
        done = self.cupy.cuda.Event(disable_timing=True)
        done.record(self.stream)

        def wait() -> None:
            deadline = time.monotonic() + self.timeout
            while not done.done:
                if time.monotonic() > deadline:
                    self.broken = True
                    self.comm.abort()
                    raise DistributedError(
                        f"rank {self.rank} of {self.size}: {what} did not complete within "
                        f"{self.timeout:g} s; another rank died or stopped answering")
                time.sleep(1e-4)

        return wait

    def all_reduce(self, buf: Array, op: ReduceOp) -> Any:
        p, n, t = _pointer(buf), buf.size, self._dtype(buf)
        return self._launch(f"all_reduce of {n} x {buf.dtype}",
                            lambda s: self.comm.allReduce(p, p, n, t, self._ops[op], s))

    def broadcast(self, buf: Array, src: int) -> Any:
        p, n, t = _pointer(buf), buf.size, self._dtype(buf)
        return self._launch(f"broadcast from rank {src}",
                            lambda s: self.comm.broadcast(p, p, n, t, src, s))

    def all_gather(self, buf: Array, out: Array) -> Any:
        p, q, n, t = _pointer(buf), _pointer(out), buf.size, self._dtype(buf)
        return self._launch(f"all_gather of {n} values",
                            lambda s: self.comm.allGather(p, q, n, t, s))

    def barrier(self) -> Any:
        one = self.cupy.zeros(1, dtype=np.float32)
        return self.all_reduce(one, ReduceOp.SUM)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.bootstrap.all_gather_object(obj)

    def abort(self, code: int = 1) -> None:
        self.comm.abort()
        self.bootstrap.abort(code)

    def close(self) -> None:
        if not self.broken:
            self.comm.destroy()
        self.bootstrap.close()
