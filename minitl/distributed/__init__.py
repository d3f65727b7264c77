"""minitl.distributed: data-parallel training over MPI (CPU ranks) or NCCL (GPU ranks).

    mpiexec -n 4 python train.py            # or: minitl pretrain --nproc 4 ...

    import minitl.distributed as dist
    dist.init_process_group(backend="mpi")  # rank and world size from the launcher
    model = dist.DistributedDataParallel(model, bucket_cap_mb=25)
    sampler = dist.DistributedSampler(dataset, shuffle=True, seed=0)
    ...
    if dist.get_rank() == 0: save(...)      # rank 0 alone logs and checkpoints
    dist.destroy_process_group()

PyTorch's names and semantics (torch.distributed, torch.nn.parallel.DistributedDataParallel,
torch.utils.data.distributed.DistributedSampler). mpi4py and CuPy are imported only when a
process group is made, so `import minitl` and this package load without them; the extra
`minitl[distributed]` installs mpi4py and the `mpich` wheel (which brings `mpiexec`).
See docs/distributed.md for the design and the measurements.
"""

from minitl.distributed.ddp import DistributedDataParallel
from minitl.distributed.group import (
    DistributedError,
    ReduceOp,
    Work,
    all_gather,
    all_reduce,
    barrier,
    broadcast,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
)
from minitl.distributed.sampler import DistributedSampler

__all__ = ["DistributedDataParallel", "DistributedError", "DistributedSampler", "ReduceOp",
           "Work", "all_gather", "all_reduce", "barrier", "broadcast", "destroy_process_group",
           "get_backend", "get_rank", "get_world_size", "init_process_group", "is_initialized"]
