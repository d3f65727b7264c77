"""DistributedDataParallel: data-parallel training with PyTorch's semantics.

    model = DistributedDataParallel(model)       # rank 0's weights and buffers go to all
    loss = loss_fn(model(x_local), y_local)      # each rank: its share of the batch
    loss.backward()                              # gradients averaged over ranks on the way
    opt.step()                                   # identical step on every rank

How the gradients travel (the design of PyTorch DDP, Li et al., VLDB 2020,
arXiv:2006.15704): the parameters are split into buckets of about `bucket_cap_mb`; a
post-accumulate-grad hook on each parameter counts it ready, and the hook that completes a
bucket copies the bucket's gradients into one flat buffer, divides by the world size and
starts a non-blocking all-reduce (MPI Iallreduce / NCCL allReduce) while the rest of backward
runs. The hook of the last parameter to become ready waits for every bucket and writes the
averaged gradients back into `.grad` (as views of the bucket buffers), so when
`backward()` returns the gradients are those of the whole global batch.

Buckets are first laid out in reverse `parameters()` order (roughly the order backward
produces them); at the end of the first synchronised backward they are rebuilt in the order
the gradients were really ready, taken from rank 0 so that every rank launches the same
all-reduces in the same order, which MPI and NCCL both require.

`no_sync()` skips the reduction (gradient accumulation: the gradients add up locally in
`.grad` and the first backward outside `no_sync` reduces the sum). Every parameter that
requires grad must receive a gradient in each synchronised backward; one that did not leaves
its bucket unreduced and the next forward raises, naming it (PyTorch's
find_unused_parameters=False behaviour). BatchNorm statistics stay per rank (no
SyncBatchNorm); with `broadcast_buffers` rank 0's buffers are copied to all before each forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from minitl.backend import array_module
from minitl.distributed.group import DistributedError, ProcessGroup, ReduceOp, group
from minitl.nn import Module
from minitl.tensor import Tensor
from minitl.types import Array


class _Bucket:
    """Parameters whose gradients travel in one all-reduce: flat layout and progress."""

    def __init__(self, params: list[Tensor], dtype: Any) -> None:
        self.params = params
        self.dtype = dtype
        self.offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
        self.ready = 0
        self.buffer: Array | None = None
        self.wait: Any = None

    @property
    def numel(self) -> int:
        return int(self.offsets[-1])


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training over the default process group.

    Args:
        module: the model, identical in structure on every rank (checked here).
        bucket_cap_mb: size of a gradient bucket in MiB (PyTorch's default 25); smaller
            buckets start reducing earlier, larger ones pay the per-message latency less.
        broadcast_buffers: copy rank 0's buffers (BatchNorm statistics) to every rank at
            the start of each forward.
        reduce_dtype: the dtype the gradients are summed in (default: the parameter's own);
            float64 makes the sum over ranks exact to float32 precision whatever the order.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0,
                 broadcast_buffers: bool = True, reduce_dtype: Any = None,
                 process_group: ProcessGroup | None = None) -> None:
        super().__init__()
        self.module = module
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.broadcast_buffers = broadcast_buffers
        self.reduce_dtype = None if reduce_dtype is None else np.dtype(reduce_dtype)
        self.require_backward_grad_sync = True
        pg = process_group if process_group is not None else group()
        object.__setattr__(self, "_pg", pg)  # not a submodule, not state
        self._names = {id(p): n for n, p in module.named_parameters()}
        self._params: list[Tensor] = [p for p in module.parameters() if p.requires_grad]
        self._check_models_agree()
        self._sync_from_rank0(list(module.parameters()) + list(module.buffers()))
        self._build_buckets(self._params[::-1])
        self._ready_order: list[int] | None = []  # indices into _params, first iteration only
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._ready_now: set[int] = set()  # ids of the parameters ready in this backward
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready)
                         for p in self._params]

    # ---- set-up ----------------------------------------------------------------------------

    def _check_models_agree(self) -> None:
        """Stop every rank, with the first difference named, unless all ranks hold the same
        parameters and buffers (names, shapes, dtypes) in the same order."""
        pg = self._pg
        mine = [(n, tuple(t.shape), str(t.dtype), t.requires_grad)
                for n, t in self.module.named_parameters()]
        mine += [(n, tuple(t.shape), str(t.dtype), False) for n, t in self.module.named_buffers()]
        if pg.size == 1:
            return
        every = pg.all_gather_object(mine)
        ref = every[0]
        for rank, theirs in enumerate(every[1:], start=1):
            if theirs == ref:
                continue
            text = (f"{len(ref)} parameters and buffers on rank 0 against {len(theirs)} on "
                    f"rank {rank}")
            for a, b in zip(ref, theirs):
                if a != b:
                    text += (f"; first difference: {a[0]} {a[1]} {a[2]} on rank 0, "
                             f"{b[0]} {b[1]} {b[2]} on rank {rank}")
                    break
            raise DistributedError(f"DistributedDataParallel: the ranks hold different models "
                                   f"({text}); build the same model on every rank")

    def _sync_from_rank0(self, tensors: list[Tensor]) -> None:
        if self._pg.size == 1 or not tensors:
            return
        waits = []
        for t in tensors:
            if not t.data.flags.c_contiguous:
                t.data = array_module(t.data).ascontiguousarray(t.data)
            waits.append(self._pg.broadcast(t.data, 0))
        for wait in waits:
            wait()

    def _build_buckets(self, ordered: list[Tensor]) -> None:
        cap = self.bucket_cap_mb * 2**20
        self._buckets: list[_Bucket] = []
        current: list[Tensor] = []
        size = 0.0
        for p in ordered:
            if current and (size + p.data.nbytes > cap or p.dtype != current[0].dtype):
                self._buckets.append(_Bucket(current, current[0].dtype))
                current, size = [], 0.0
            current.append(p)
            size += p.data.nbytes
        if current:
            self._buckets.append(_Bucket(current, current[0].dtype))
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._launched = 0
        self._inflight: list[_Bucket] = []  # launched and still polled

    # ---- forward -----------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if any(b.ready for b in self._buckets):
            missing = [self._names.get(id(p), "?") for p in self._params
                       if id(p) not in self._ready_now]
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reduction in the prior "
                "iteration before starting a new one; these parameters received no gradient "
                f"in the last backward: {', '.join(missing[:8])}"
                + (" ..." if len(missing) > 8 else ""))
        if self.broadcast_buffers:
            self._sync_from_rank0(list(self.module.buffers()))
        return self.module(*args, **kwargs)

    def _rebuild_buckets(self) -> None:
        order = self._ready_order or []
        if self._pg.size > 1:
            order = self._pg.all_gather_object(order)[0]  # rank 0's order, the same for all
        self._build_buckets([self._params[i] for i in order])
        self._ready_order = None

    # ---- backward: the hooks ------------------------------------------------------------

    def _grad_ready(self, p: Tensor) -> None:
        if not self.require_backward_grad_sync:
            return
        if self._ready_order is not None:
            self._ready_order.append(self._index[id(p)])
        self._ready_now.add(id(p))
        if self._inflight:  # drive MPI's progress while backward runs (no async thread)
            self._inflight = [b for b in self._inflight if not b.wait.poll()]
        bucket = self._bucket_of[id(p)]
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            self._launch(bucket)
            if self._launched == len(self._buckets):
                self._finish()

    def _launch(self, bucket: _Bucket) -> None:
        xp = array_module(bucket.params[0].data)
        dtype = self.reduce_dtype or bucket.dtype
        buf = xp.empty(bucket.numel, dtype=dtype)
        for p, lo, hi in zip(bucket.params, bucket.offsets, bucket.offsets[1:]):
            buf[lo:hi] = p.grad.data.reshape(-1)  # type: ignore[union-attr]
        if self._pg.size > 1:
            buf /= self._pg.size  # as PyTorch: divide first, then sum
            bucket.wait = self._pg.all_reduce(buf, ReduceOp.SUM)
        else:
            bucket.wait = _done
        bucket.buffer = buf
        self._launched += 1
        if hasattr(bucket.wait, "poll"):
            self._inflight.append(bucket)

    def _finish(self) -> None:
        """All buckets launched: wait for each, then hand the averages back as `.grad`."""
        for bucket in self._buckets:
            bucket.wait()
            buf = bucket.buffer
            for p, lo, hi in zip(bucket.params, bucket.offsets, bucket.offsets[1:]):
                g = buf[lo:hi].reshape(p.shape)  # type: ignore[index]
                p.grad = Tensor._wrap(g if g.dtype == p.dtype else g.astype(p.dtype))
            bucket.ready, bucket.buffer, bucket.wait = 0, None, None
        self._launched = 0
        self._inflight.clear()
        self._ready_now.clear()
        if self._ready_order is not None:  # the first synchronised backward has just ended
            self._rebuild_buckets()

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward inside the block only accumulates into `.grad` locally; the first
        synchronised backward after it reduces the accumulated sum."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # ---- state: the wrapped module's, under "module." as in PyTorch ---------------------

    def extra_repr(self) -> str:
        return (f"world_size={self._pg.size}, buckets={len(self._buckets)}, "
                f"bucket_cap_mb={self.bucket_cap_mb:g}")


def _done() -> None:
    return None
