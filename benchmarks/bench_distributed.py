"""Data-parallel training on MPI ranks: what the communication costs and what it buys.

    python -m benchmarks.bench_distributed [--quick] [--no-save]

The driver starts each part under the venv's mpiexec (`mpiexec -n 2 python -m
benchmarks.bench_distributed --part NAME`), reads back what rank 0 measured, and prints:

1. all-reduce time against message size (2 ranks, float32, in place), with the alpha-beta
   fit t(n) = alpha + n * beta by least squares on the relative error;
2. forward + backward of a small BERT per rank alone, then with DDP's bucketed all-reduces
   overlapping backward, then with one all-reduce of all gradients after backward;
3. a training step on one global batch: 1 rank x 2 threads against 2 ranks x 1 thread;
4. an estimate for 8 and 64 ranks: a ring all-reduce costs 2(p-1) alpha + 2(p-1)/p S beta
   for S bytes, against the measured compute, with this machine's fit and with assumed GPU
   interconnects (docs/distributed.md gives their sources).

Other jobs share small machines: every figure is printed with the 1-minute load average
taken when its part ended.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

# ---- the parts, run as ranks -------------------------------------------------------------------


def _bert(hidden: int = 128, layers: int = 4) -> Any:
    from minitl.models.bert import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=2000, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=4 * hidden,
                     max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(cfg)


def _loss(model: Any, ids: np.ndarray) -> Any:
    import minitl as mt
    import minitl.nn.functional as F

    out = model(mt.tensor(ids))
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), mt.tensor(ids.reshape(-1)))


def _median_time(fn: Any, reps: int) -> float:
    import minitl.distributed as dist

    fn()  # warm-up
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part_allreduce(quick: bool) -> dict[str, Any]:
    import minitl.distributed as dist
    from minitl.distributed.group import ReduceOp, group

    pg = group()
    rows = []
    top = 2**22 if quick else 2**24  # bytes
    n_bytes = 8
    while n_bytes <= top:
        buf = np.ones(n_bytes // 4, dtype=np.float32)
        reps = 30 if n_bytes < 2**20 else 8
        t = _median_time(lambda b=buf: pg.all_reduce(b, ReduceOp.SUM)(), reps)
        rows.append({"bytes": n_bytes, "seconds": t})
        n_bytes *= 4
    x = np.array([r["bytes"] for r in rows], dtype=np.float64)
    y = np.array([r["seconds"] for r in rows])
    # Least squares on the relative error (weights 1/t): the small messages fix alpha, the
    # large ones beta, and neither drowns the other.
    beta, alpha = np.polyfit(x, y, 1, w=1 / y)
    return {"rows": rows, "alpha_s": float(alpha), "beta_s_per_byte": float(beta),
            "world": dist.get_world_size()}


def part_overlap(quick: bool) -> dict[str, Any]:
    import minitl as mt
    import minitl.distributed as dist
    from minitl.distributed.group import ReduceOp, group

    rank, world = dist.get_rank(), dist.get_world_size()
    mt.manual_seed(0)
    model = _bert()
    ids = np.random.default_rng(rank).integers(1, 2000, size=(4, 64))  # per rank
    params = [p for p in model.parameters() if p.requires_grad]
    grad_bytes = sum(p.data.nbytes for p in params)
    reps = 3 if quick else 8

    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1.0)

    def local() -> None:  # forward + backward, no communication
        model.zero_grad()
        with ddp.no_sync():
            _loss(ddp, ids).backward()

    def overlapped() -> None:
        model.zero_grad()
        _loss(ddp, ids).backward()

    def after() -> None:  # the same reduction, started only once backward is over
        model.zero_grad()
        with ddp.no_sync():
            _loss(ddp, ids).backward()
        flat = np.concatenate([p.grad.numpy().reshape(-1) for p in params]) / world
        group().all_reduce(flat, ReduceOp.SUM)()

    flat = np.ones(grad_bytes // 4, dtype=np.float32)
    out = {"grad_bytes": grad_bytes, "params": sum(p.numel() for p in params),
           "buckets": len(ddp._buckets)}
    candidates = {"forward+backward alone": local, "DDP, overlapped": overlapped,
                  "backward, then one all-reduce": after,
                  "all-reduce of all gradients alone":
                      lambda: group().all_reduce(flat, ReduceOp.SUM)()}
    overlapped()  # the first synchronised backward rebuilds the buckets: not timed
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for r in range(reps):  # interleaved rounds: a busy minute slows every candidate alike
        names = list(candidates)
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(_median_time(candidates[name], 1))
    out.update({k: statistics.median(v) for k, v in times.items()})
    return out


def part_step(quick: bool) -> dict[str, Any]:
    """One AdamW step on a global batch of 8 sequences, split over the ranks."""
    import minitl as mt
    import minitl.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    mt.set_num_threads(threads)
    mt.manual_seed(0)
    model = _bert()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1.0)
    opt = mt.optim.AdamW(model.parameters(), lr=1e-4)
    batch = np.random.default_rng(0).integers(1, 2000, size=(8, 64))
    local = batch[rank * 8 // world:(rank + 1) * 8 // world]

    def step() -> None:
        opt.zero_grad()
        _loss(ddp, local).backward()
        opt.step()

    t = _median_time(step, 3 if quick else 8)
    return {"world": world, "threads": threads, "step_s": t, "samples_per_s": 8 / t}


PARTS = {"allreduce": part_allreduce, "overlap": part_overlap, "step": part_step}


def rank_main(part: str, out: str, quick: bool) -> None:
    import minitl.distributed as dist

    dist.init_process_group("mpi")
    result = PARTS[part](quick)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


# ---- the driver --------------------------------------------------------------------------------

def run_part(part: str, nproc: int, threads: int, quick: bool) -> dict[str, Any]:
    from minitl.distributed.launch import mpiexec_command

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        args = ["-m", "benchmarks.bench_distributed", "--part", part, "--out", out]
        cmd = mpiexec_command(nproc, args + (["--quick"] if quick else []), threads)
        subprocess.run(cmd, check=True, timeout=600)
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
    result["load_1min"] = os.getloadavg()[0]
    return result


def _ring(p: int, n_bytes: float, alpha: float, beta: float) -> float:
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * n_bytes * beta


# Assumed GPU interconnects (docs/distributed.md names the sources): per-GPU bandwidth one way
# and a per-message latency, NCCL's ring over NVLink in one node and over InfiniBand across.
GPU_LINKS = {
    8: ("8 H100 SXM, NVLink 450 GB/s", 10e-6, 1 / 450e9),
    64: ("8 nodes x 8 H100, IB NDR 50 GB/s per GPU", 20e-6, 1 / 50e9),
}


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from . import common

    p = common.parser(__doc__ or "")
    p.add_argument("--part", choices=sorted(PARTS), help=argparse_hidden())
    p.add_argument("--out", help=argparse_hidden())
    args = p.parse_args()
    if args.part:
        rank_main(args.part, args.out, args.quick)
        return
    info = common.machine_info()
    common.print_machine(info)
    results: dict[str, Any] = {}

    ar = results["allreduce"] = run_part("allreduce", 2, 1, args.quick)
    alpha, beta = ar["alpha_s"], ar["beta_s_per_byte"]
    print(f"\n1. all-reduce, 2 ranks, float32 in place (load {ar['load_1min']:.2f})")
    print(f"{'bytes':>10} | {'measured us':>11} | {'fit us':>8}")
    for r in ar["rows"]:
        print(f"{r['bytes']:>10} | {r['seconds'] * 1e6:>11.1f} | "
              f"{(alpha + r['bytes'] * beta) * 1e6:>8.1f}")
    print(f"fit: alpha = {alpha * 1e6:.1f} us, beta = {beta * 1e9:.3f} ns/byte "
          f"({1 / beta / 1e9:.2f} GB/s)")

    ov = results["overlap"] = run_part("overlap", 2, 1, args.quick)
    print(f"\n2. BERT {ov['params']:,} parameters ({ov['grad_bytes'] / 2**20:.1f} MiB of "
          f"gradients, {ov['buckets']} buckets of 1 MiB), 4 x 64 tokens per rank, 2 ranks x 1 "
          f"thread (load {ov['load_1min']:.2f})")
    for key in ("forward+backward alone", "DDP, overlapped", "backward, then one all-reduce",
                "all-reduce of all gradients alone"):
        print(f"  {key:<36} {ov[key] * 1e3:8.1f} ms")

    one = results["step_1x2"] = run_part("step", 1, 2, args.quick)
    two = results["step_2x1"] = run_part("step", 2, 1, args.quick)
    print("\n3. AdamW step on 8 x 64 tokens")
    for name, r in (("1 rank x 2 threads", one), ("2 ranks x 1 thread", two)):
        print(f"  {name:<20} {r['step_s'] * 1e3:8.1f} ms  {r['samples_per_s']:6.1f} samples/s "
              f"(load {r['load_1min']:.2f})")

    compute = ov["forward+backward alone"]
    print("\n4. estimate, same per-rank batch (weak scaling), ring all-reduce; efficiency = "
          "compute / (compute + exposed communication); overlap hides it behind backward "
          "(2/3 of the compute) at most")
    print(f"{'ranks':>5} | {'model, links':<66} | {'compute ms':>10} | {'comm ms':>8} | "
          f"{'no overlap':>10} | {'overlap':>7}")
    # GPU compute from FLOPs: 6 x parameters x tokens per step at an assumed 300 TFLOP/s
    # sustained (about 30% of an H100 SXM's 989 dense BF16 TFLOP/s); fp32 gradients.
    gpu_models = [(f"this BERT ({ov['params'] / 1e6:.1f} M), 4x64 tokens", ov["params"], 256),
                  ("BERT-base (110 M), 32x128 tokens", 110e6, 4096)]
    rows = []
    for p_ranks in (2, 8, 64):
        cases = [("this BERT, this machine's fit, measured CPU compute", alpha, beta,
                  compute, ov["grad_bytes"])]
        if p_ranks in GPU_LINKS:
            label, a, b = GPU_LINKS[p_ranks]
            cases += [(f"{name}; {label}", a, b, 6 * n * tokens / 300e12, 4 * n)
                      for name, n, tokens in gpu_models]
        for label, a, b, comp, size in cases:
            comm = _ring(p_ranks, size, a, b)
            backward = comp * 2 / 3
            no_overlap = comp / (comp + comm)
            overlap = comp / (comp - backward + max(backward, comm))
            rows.append({"ranks": p_ranks, "case": label, "compute_s": comp, "comm_s": comm,
                         "eff_no_overlap": no_overlap, "eff_overlap": overlap})
            print(f"{p_ranks:>5} | {label:<66} | {comp * 1e3:10.3f} | {comm * 1e3:8.3f} | "
                  f"{no_overlap:>10.2f} | {overlap:>7.2f}")
    results["estimate"] = rows
    if not args.no_save:
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        path = common.RESULTS / f"distributed-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        path.write_text(json.dumps({"benchmark": "distributed", "machine": info,
                                    "results": results}, indent=1, default=str))
        print(f"saved {path}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
