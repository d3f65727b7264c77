"""The MPI backend: CPU ranks over mpi4py (any MPI; the `mpich` wheel in the venv by default).

Every collective is MPI's non-blocking form (Iallreduce, Ibcast, Iallgather, Ibarrier) so
that the waits can be watched: `wait()` polls `Test()` until the request completes or the
timeout passes. Polling also drives MPICH's progress engine, which (without an async progress
thread) advances a non-blocking collective only while some MPI call runs.

Faults end the job instead of hanging it:
- an uncaught exception on any rank prints its traceback, then `MPI_Abort`s every rank
  (sys.excepthook);
- a wait that outlives the timeout raises `DistributedError` naming the operation and the
  rank; the communicator is then broken and the process aborts at exit instead of calling
  `MPI_Finalize`, which would wait for the rank that is gone;
- a rank killed outright is noticed by the launcher (hydra's mpiexec ends the others).
"""

from __future__ import annotations

import atexit
import pickle
import sys
import time
from typing import Any

import numpy as np

from minitl.distributed.group import DistributedError, ProcessGroup, ReduceOp
from minitl.types import Array


def import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("the mpi backend needs mpi4py and an MPI: "
                          "pip install 'minitl[distributed]' (mpi4py, mpich)") from e
    return MPI


# Seconds a failing rank waits between writing its last words and aborting the job.
_DRAIN_S = 0.2


class MPIProcessGroup(ProcessGroup):
    backend = "mpi"

    def __init__(self, timeout: float) -> None:
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()  # our own context: a user's MPI calls do not mix in
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout
        self.broken = False
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
                     ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX}
        if self.size > 1:
            self._previous_hook = sys.excepthook
            sys.excepthook = self._excepthook
            atexit.register(self._abort_if_broken)

    # ---- faults -----------------------------------------------------------------------

    def _excepthook(self, kind: type[BaseException], value: BaseException, tb: Any) -> None:
        self._previous_hook(kind, value, tb)
        sys.stderr.write(f"minitl.distributed: rank {self.rank} of {self.size} stopped on "
                         f"{kind.__name__}; aborting all ranks\n")
        sys.stderr.flush()
        # MPI_Abort has the launcher kill every rank, and it may do so before it has forwarded
        # the last lines this rank wrote: give its output forwarding a moment to drain
        time.sleep(_DRAIN_S)
        self.abort(1)

    def _abort_if_broken(self) -> None:
        if self.broken:
            self.abort(1)

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.MPI.COMM_WORLD.Abort(code)

    def _waiter(self, request: Any, what: str) -> Any:
        def wait() -> None:
            if request.Test():
                return
            start = time.monotonic()
            deadline = start + self.timeout
            while not request.Test():
                now = time.monotonic()
                if now - start > 2e-3:  # spin for 2 ms (as MPI's own Wait would), then yield
                    if now > deadline:
                        self.broken = True
                        raise DistributedError(
                            f"rank {self.rank} of {self.size}: {what} did not complete within "
                            f"{self.timeout:g} s; another rank died or stopped answering")
                    time.sleep(2e-4)

        wait.poll = request.Test  # type: ignore[attr-defined]  # a nudge to MPI's progress
        return wait

    # ---- collectives --------------------------------------------------------------------

    def all_reduce(self, buf: Array, op: ReduceOp) -> Any:
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, self._ops[op])
        return self._waiter(request, f"all_reduce of {buf.size} x {buf.dtype}")

    def broadcast(self, buf: Array, src: int) -> Any:
        return self._waiter(self.comm.Ibcast(buf, root=src), f"broadcast from rank {src}")

    def all_gather(self, buf: Array, out: Array) -> Any:
        return self._waiter(self.comm.Iallgather(buf, out), f"all_gather of {buf.size} values")

    def barrier(self) -> Any:
        return self._waiter(self.comm.Ibarrier(), "barrier")

    def all_gather_object(self, obj: Any) -> list[Any]:
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64)
        self.all_gather(np.array([data.size], dtype=np.int64), sizes)()
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        request = self.comm.Iallgatherv(data, [out, sizes, offsets, self.MPI.BYTE])
        self._waiter(request, "all_gather_object")()
        # Local ranks of one job exchange their own objects (shapes, names): nothing foreign.
        return [pickle.loads(out[o:o + s].tobytes()) for o, s in zip(offsets, sizes)]

    def close(self) -> None:
        if self.size > 1 and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook
        if not self.broken:
            self.comm.Free()
