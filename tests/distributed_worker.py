"""One rank of the multi-rank checks in tests/test_distributed.py (run under mpiexec).

    mpiexec -n 2 python tests/distributed_worker.py parity OUT.npz
    mpiexec -n 2 python tests/distributed_worker.py collectives
    mpiexec -n 2 python tests/distributed_worker.py fault-raise|fault-exit|fault-hang|mismatch
    mpiexec -n 2 python tests/distributed_worker.py resume DIR STEPS [RESUME_FROM]

`parity`: BERT-small (float32 and float64) and resnet-mini (float64), each taking 20 AdamW
steps on a global batch split over the ranks (rank 0 saves losses and final weights); `accum`
does the BERT run as two micro-batches per rank, the first under no_sync. Every rank starts
from a different seed: the weights all ranks train are rank 0's, broadcast by
DistributedDataParallel.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import minitl as mt
import minitl.distributed as dist
import minitl.nn.functional as F
from minitl.models.bert import BertConfig, BertForMaskedLM
from minitl.models.resnet import ResNet, ResNetConfig

STEPS = 20
B = 8  # global batch


def bert() -> tuple[mt.nn.Module, np.ndarray, np.ndarray]:
    cfg = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(123)
    ids = rng.integers(1, 96, size=(STEPS, B, 16))
    return BertForMaskedLM(cfg), ids, ids


def resnet() -> tuple[mt.nn.Module, np.ndarray, np.ndarray]:
    net = ResNet(ResNetConfig.named("resnet-mini"))
    net.eval()  # BatchNorm on running statistics: per-rank batch statistics would differ
    rng = np.random.default_rng(7)
    x = rng.standard_normal((STEPS, B, 1, 12, 12))  # small images: the run stays short
    y = rng.integers(0, 10, size=(STEPS, B))
    return net, x, y


def loss_of(model: mt.nn.Module, x: np.ndarray, y: np.ndarray) -> mt.Tensor:
    if x.dtype.kind == "f":
        x = x.astype(mt.get_default_dtype())
    out = model(mt.tensor(x))
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), mt.tensor(y.reshape(-1)))


def train(build: str, accum: int = 1, bucket_cap_mb: float = 0.02) -> dict[str, np.ndarray]:
    rank, world = dist.get_rank(), dist.get_world_size()
    mt.manual_seed(1000 + rank)  # different on each rank: DDP must broadcast rank 0's
    model, xs, ys = bert() if build == "bert" else resnet()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    opt = mt.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    local = B // world
    losses = []
    for step in range(STEPS):
        x = xs[step, rank * local:(rank + 1) * local]
        y = ys[step, rank * local:(rank + 1) * local]
        opt.zero_grad()
        micro = local // accum
        total = 0.0
        for k in range(accum):
            sl = slice(k * micro, (k + 1) * micro)
            if k < accum - 1:
                with ddp.no_sync():
                    loss = loss_of(ddp, x[sl], y[sl]) / accum
                    loss.backward()
            else:
                loss = loss_of(ddp, x[sl], y[sl]) / accum
                loss.backward()
            total += float(loss.item())
        t = mt.tensor([total], dtype=mt.float64)
        dist.all_reduce(t, dist.ReduceOp.AVG)  # the global batch's loss, for the record
        losses.append(float(t.item()))
        opt.step()
    out = {f"{build}/losses": np.array(losses)}
    out.update({f"{build}/{n}": p.numpy() for n, p in model.named_parameters()})
    return out


def parity(path: str) -> None:
    out: dict[str, np.ndarray] = {}
    out.update(train("bert"))
    accum = train("bert", accum=2)
    out.update({k.replace("bert/", "bert-accum/"): v for k, v in accum.items()})
    mt.set_default_dtype(mt.float64)  # the same in float64: only the summation order differs
    f64 = train("bert")
    # resnet-mini only in float64: a float32 rounding difference of one ulp can move a ReLU
    # or max-pool input across its kink, and from that step AdamW's trajectories part (on a
    # Zen 5 the 2-rank loss jumped from 1e-7 to 1.7e-5 relative at step 7 while the step-0
    # gradients agreed to 2e-7); in float64 no input comes that close.
    f64.update(train("resnet"))
    mt.set_default_dtype(mt.float32)
    out.update({k.replace("bert/", "bert-f64/").replace("resnet/", "resnet-f64/"): v
                for k, v in f64.items()})
    if dist.get_rank() == 0:  # rank 0 alone writes
        np.savez(path, **out)


def collectives() -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    t = mt.full((3, 2), float(rank + 1))
    dist.all_reduce(t)
    assert np.all(t.numpy() == sum(range(1, world + 1))), t
    t = mt.full((2,), float(rank + 1))
    dist.all_reduce(t, dist.ReduceOp.MAX)
    assert np.all(t.numpy() == world)
    t = mt.arange(6, dtype=mt.float32).reshape(2, 3).T * (rank + 1)  # not contiguous
    dist.broadcast(t, src=world - 1)
    assert np.array_equal(t.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3).T * world)
    parts = [mt.zeros(4) for _ in range(world)]
    dist.all_gather(parts, mt.full((4,), float(rank)))
    assert [float(p.numpy()[0]) for p in parts] == [float(r) for r in range(world)]
    work = dist.all_reduce(mt.ones(5), async_op=True)
    assert work is not None and work.wait()
    dist.barrier()
    sampler = dist.DistributedSampler(list(range(11)), shuffle=True, seed=3)
    mine = mt.tensor(list(sampler), dtype=mt.float32)
    every = [mt.zeros(len(sampler)) for _ in range(world)]
    dist.all_gather(every, mine)
    seen = sorted(int(v) for p in every for v in p.numpy())
    assert set(seen) == set(range(11)) and len(seen) == len(sampler) * world
    if rank == 0:
        print("collectives ok", world)


def fault(kind: str) -> None:
    rank = dist.get_rank()
    t = mt.ones(4)
    dist.all_reduce(t)
    if rank == 1:
        if kind == "fault-raise":
            raise ValueError("rank 1 fails on purpose")
        if kind == "fault-exit":
            os._exit(3)
        if kind == "fault-hang":
            time.sleep(60)
    dist.all_reduce(t)  # the others wait here for the rank that is gone
    print(f"rank {rank} passed a collective it should not have", flush=True)


def mismatch() -> None:
    cfg = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2 + dist.get_rank(),
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    dist.DistributedDataParallel(BertForMaskedLM(cfg))
    print("models accepted", flush=True)


def main() -> None:
    mode = sys.argv[1]
    timeout = 3.0 if mode == "fault-hang" else None
    dist.init_process_group("mpi", timeout=timeout)
    if mode == "parity":
        parity(sys.argv[2])
    elif mode == "collectives":
        collectives()
    elif mode == "mismatch":
        mismatch()
    else:
        fault(mode)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
