"""minitl.distributed in one process: the autograd hook DDP rides on, DistributedSampler,
DDP's bookkeeping on a world of one, the launcher, and the NCCL backend driven through a
stand-in `cupy.cuda.nccl` (no GPU here: the stand-in checks the calls, it runs no NCCL)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, ClassVar

import numpy as np
import pytest

import minitl as mt
import minitl.distributed as dist
from minitl import nn
from minitl.distributed import launch
from minitl.distributed.group import ProcessGroup, ReduceOp

# ---- the post-accumulate-grad hook ------------------------------------------------------------


def test_post_accumulate_grad_hook_runs_once_after_all_uses_are_summed() -> None:
    w = mt.tensor([1.0, 2.0], requires_grad=True)
    seen: list[np.ndarray] = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    ((w * w).sum() + (3 * w).sum()).backward()  # two uses of w
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [5.0, 7.0])
    (w * 2).sum().backward()  # accumulates: the hook sees the running .grad
    np.testing.assert_allclose(seen[1], [7.0, 9.0])
    handle.remove()
    (w * 2).sum().backward()
    assert len(seen) == 2


def test_post_accumulate_grad_hook_refuses_non_leaves_and_frozen_tensors() -> None:
    w = mt.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.tensor([1.0]).register_post_accumulate_grad_hook(lambda t: None)


def test_post_accumulate_grad_hook_is_not_called_by_autograd_grad() -> None:
    w = mt.tensor([1.0], requires_grad=True)
    calls: list[int] = []
    w.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    mt.autograd.grad((w * 3).sum(), [w])
    assert calls == [] and w.grad is None


# ---- DistributedSampler --------------------------------------------------------------------


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True), (2, 4, False),
                                                    (12, 4, True), (7, 1, False)])
def test_sampler_splits_like_pytorch(n: int, replicas: int, drop_last: bool) -> None:
    shares = [list(dist.DistributedSampler(range(n), replicas, r, shuffle=False,
                                           drop_last=drop_last)) for r in range(replicas)]
    per = (n // replicas) if drop_last else -(-n // replicas)
    assert all(len(s) == per for s in shares)
    order = [i % n for i in range(per * replicas)]  # PyTorch pads by repeating the start
    for r, share in enumerate(shares):
        assert share == order[r::replicas]


def test_sampler_shuffles_the_same_order_on_every_rank_per_epoch() -> None:
    def shares(epoch: int) -> list[list[int]]:
        out = []
        for r in range(3):
            s = dist.DistributedSampler(range(30), 3, r, seed=5)
            s.set_epoch(epoch)
            out.append(list(s))
        return out

    e0, e1 = shares(0), shares(1)
    # a partition: no example twice
    assert sorted(i for share in e0 for i in share) == list(range(30))
    assert e0 != e1 and e0 == shares(0)
    with pytest.raises(ValueError, match="Invalid rank"):
        dist.DistributedSampler(range(4), num_replicas=2, rank=2)


# ---- DDP on a world of one -----------------------------------------------------------------


@pytest.fixture
def world_of_one() -> Any:
    pytest.importorskip("mpi4py", reason="the mpi backend needs mpi4py")
    dist.init_process_group("mpi")
    yield
    dist.destroy_process_group()


def test_ddp_alone_gives_the_plain_gradients_and_rebuilds_buckets(world_of_one: Any) -> None:
    mt.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    ddp = dist.DistributedDataParallel(net, bucket_cap_mb=1e-4)  # a bucket per parameter
    assert len(ddp._buckets) == 4
    x = mt.randn(5, 4)
    ddp(x).sum().backward()
    got = [p.grad.numpy().copy() for p in net.parameters()]
    net.zero_grad()
    net(x).sum().backward()
    for g, p in zip(got, net.parameters()):
        np.testing.assert_array_equal(g, p.grad.numpy())
    assert ddp._ready_order is None and len(ddp._buckets) == 4  # rebuilt after iteration 1


def test_ddp_no_sync_accumulates_then_reduces_the_sum(world_of_one: Any) -> None:
    mt.manual_seed(0)
    net = nn.Linear(3, 2)
    ddp = dist.DistributedDataParallel(net)
    a, b = mt.randn(2, 3), mt.randn(2, 3)
    with ddp.no_sync():
        ddp(a).sum().backward()
    assert not any(bk.ready for bk in ddp._buckets)
    ddp(b).sum().backward()
    want = (a.numpy().sum(0) + b.numpy().sum(0))
    np.testing.assert_allclose(net.weight.grad.numpy(), np.stack([want, want]), rtol=1e-6)


def test_ddp_names_a_parameter_that_got_no_gradient(world_of_one: Any) -> None:
    net = nn.ModuleDict({"used": nn.Linear(2, 2), "unused": nn.Linear(2, 2)})
    ddp = dist.DistributedDataParallel(net)
    net["used"](mt.randn(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="unused.weight"):
        ddp(mt.randn(1, 2))


# ---- the launcher ----------------------------------------------------------------------------


def test_relaunch_is_a_no_op_inside_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMI_RANK", "1")
    assert launch.relaunch_under_mpiexec(2, ["-c", "pass"]) is None


def test_mpiexec_command_prefers_the_venv_and_sets_threads(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(launch, "find_mpiexec", lambda: "/venv/bin/mpiexec")
    cmd = launch.mpiexec_command(4, ["-m", "minitl.cli", "pretrain"], threads_per_rank=1)
    assert cmd[:3] == ["/venv/bin/mpiexec", "-n", "4"]
    assert ["-genv", "OMP_NUM_THREADS", "1"] == cmd[3:6]
    assert cmd[-4:] == [sys.executable, "-m", "minitl.cli", "pretrain"]


# ---- NCCL through a stand-in ----------------------------------------------------------------


class _FakeComm:
    """Plays rank 0 of 2 where rank 1 holds the same data: sums double, gathers repeat."""

    calls: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, ndev: int, uid: Any, rank: int) -> None:
        assert (ndev, uid, rank) == (2, b"uid", 0)

    @staticmethod
    def _view(ptr: int, count: int, kind: int) -> np.ndarray:
        dtype = {0: np.float32, 1: np.float64, 2: np.int64}[kind]
        buf = (np.ctypeslib.ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype)

    def allReduce(self, src: int, dst: int, count: int, kind: int, op: int, stream: int) -> None:
        self.calls.append(("allReduce", count, kind, op, stream))
        self._view(dst, count, kind)[:] = self._view(src, count, kind) * 2

    def broadcast(self, src: int, dst: int, count: int, kind: int, root: int, stream: int
                  ) -> None:
        self.calls.append(("broadcast", count, kind, root, stream))

    def allGather(self, src: int, dst: int, count: int, kind: int, stream: int) -> None:
        self.calls.append(("allGather", count, kind, stream))
        out = self._view(dst, 2 * count, kind)
        out[:count] = out[count:] = self._view(src, count, kind)

    def destroy(self) -> None:
        self.calls.append(("destroy",))

    def abort(self) -> None:
        self.calls.append(("abort",))


class _FakeEvent:
    def __init__(self, **_: Any) -> None:
        self.done = True

    def record(self, stream: Any = None) -> None:
        pass


class _FakeStream:
    ptr = 1234

    def __init__(self, **_: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass


class _Bootstrap(ProcessGroup):
    rank, size = 0, 2

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj, obj]


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> Any:
    nccl = types.SimpleNamespace(
        get_unique_id=lambda: b"uid", NcclCommunicator=_FakeComm,
        NCCL_SUM=0, NCCL_PROD=1, NCCL_MAX=2, NCCL_MIN=3,
        NCCL_FLOAT32=0, NCCL_FLOAT64=1, NCCL_INT64=2, NCCL_FLOAT16=6, NCCL_INT32=7,
        NCCL_UINT8=8)
    cuda = types.ModuleType("cupy.cuda")
    cuda.nccl = nccl  # type: ignore[attr-defined]
    cuda.Device = lambda i: types.SimpleNamespace(use=lambda: None)  # type: ignore[attr-defined]
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)  # type: ignore[attr-defined]
    cuda.Event, cuda.Stream = _FakeEvent, _FakeStream  # type: ignore[attr-defined]
    cuda.get_current_stream = lambda: _FakeStream()  # type: ignore[attr-defined]
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda  # type: ignore[attr-defined]
    cupy.zeros = np.zeros  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    _FakeComm.calls = []
    return importlib.import_module("minitl.distributed.nccl")


def test_nccl_backend_issues_the_right_calls_through_a_stand_in(fake_cupy: Any) -> None:
    pg = fake_cupy.NCCLProcessGroup(timeout=5.0, bootstrap=_Bootstrap())
    assert (pg.rank, pg.size, pg.backend) == (0, 2, "nccl")
    buf = np.arange(6, dtype=np.float32)
    pg.all_reduce(buf, ReduceOp.SUM)()
    np.testing.assert_array_equal(buf, np.arange(6) * 2)
    out = np.zeros((2, 3), dtype=np.float64)
    pg.all_gather(np.ones(3), out)()
    np.testing.assert_array_equal(out, np.ones((2, 3)))
    pg.broadcast(np.zeros(2, dtype=np.int64), 1)()
    pg.barrier()()
    pg.close()
    assert _FakeComm.calls == [("allReduce", 6, 0, 0, 1234), ("allGather", 3, 1, 1234),
                               ("broadcast", 2, 2, 1, 1234), ("allReduce", 1, 0, 0, 1234),
                               ("destroy",)]
    with pytest.raises(TypeError, match="no NCCL type"):
        pg.all_reduce(np.zeros(2, dtype=np.complex64), ReduceOp.SUM)


def test_ddp_averages_over_the_nccl_stand_in(fake_cupy: Any) -> None:
    pg = fake_cupy.NCCLProcessGroup(timeout=5.0, bootstrap=_Bootstrap())
    mt.manual_seed(0)
    net = nn.Linear(3, 2)
    ddp = dist.DistributedDataParallel(net, process_group=pg, broadcast_buffers=False)
    x = mt.randn(4, 3)
    ddp(x).sum().backward()
    grad = net.weight.grad.numpy().copy()
    net.zero_grad()
    net(x).sum().backward()  # rank 1 "has the same batch": the average is the local gradient
    np.testing.assert_allclose(grad, net.weight.grad.numpy(), rtol=1e-6)


def test_flags_of_gives_the_same_arguments_back() -> None:
    import argparse

    from minitl.cli.pretrain import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "bert-tiny", "--lr", "0.0003", "--set", "n_layer=2",
                              "--set", "hidden_act=gelu", "--quiet", "--nproc", "2"])
    again = parser.parse_args(launch.flags_of(args, add_arguments))
    assert vars(again) == vars(args)
