"""`minitl bench [--quick] [SUBJECT ...]`: run the benchmarks (minitl against PyTorch / numpy
doing the same work) and print their tables; each saves JSON rows under benchmarks/results/.

Subjects are the `benchmarks/bench_<subject>.py` modules of a source checkout: ops (the fused
light ops), train_step (a bert-mini and a resnet-mini training step), gemm, lora, llama
(SmolLM2-135M with its 4-bit base against transformers: prefill, decode, a LoRA step, peak
memory; needs torch, transformers, peft and the smollm2-135m asset; runs only when named),
cuda (the GPU set: GEMM vs cuBLAS, LoRA, a training step) and distributed (all-reduce against
message size, overlap of backward and all-reduce, over MPI ranks; runs only when named). With
no subject, the CPU ones but llama and distributed run, or with `--device cuda` the GPU one.

In a source checkout the benchmarks are `benchmarks/` (results in benchmarks/results/); an
installed minitl carries the same files as `minitl._benchmarks` (results in
./benchmark-results/, or MINITL_BENCH_RESULTS).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from minitl.cli.args import UsageError, UserError

DEFAULT_ORDER = ("ops", "train_step", "gemm", "lora")
GPU_SUBJECTS = ("cuda",)  # benchmarks/bench_cuda.py: gemm, lora and train on the GPU
# Run only when named: llama is minutes long and needs torch, transformers, peft and a 98 MB
# asset; distributed starts MPI ranks (mpi4py and mpiexec, minitl[distributed]).
NAMED_ONLY = ("llama", "distributed")


def find_benchmarks() -> Path | None:
    """The `benchmarks/` directory of the source checkout this minitl runs from, if any."""
    here = Path(__file__).resolve().parents[2]  # minitl/cli/bench.py -> repository root
    for root in (here, Path.cwd()):
        candidate = root / "benchmarks"
        if (candidate / "common.py").is_file():
            return candidate
    return None


def installed_benchmarks() -> Path | None:
    """The benchmarks an installed minitl carries (setup.py's build_py copies them)."""
    here = Path(__file__).resolve().parents[1] / "_benchmarks"
    return here if (here / "common.py").is_file() else None


def available(bench_dir: Path) -> list[str]:
    names = sorted(p.stem[len("bench_"):] for p in bench_dir.glob("bench_*.py"))
    ordered = [n for n in DEFAULT_ORDER if n in names]
    return ordered + [n for n in names if n not in ordered]


def run(args: argparse.Namespace) -> int:
    bench_dir, package = find_benchmarks(), "benchmarks"
    if bench_dir is None:
        bench_dir, package = installed_benchmarks(), "minitl._benchmarks"
    if bench_dir is None:
        raise UsageError("no benchmarks found: neither a source checkout's benchmarks/ nor "
                         "minitl._benchmarks of an installed minitl (reinstall with pip)")
    names = available(bench_dir)
    on_gpu = [n for n in names if n in GPU_SUBJECTS]
    subjects = args.subjects or (on_gpu if args.device == "cuda" else
                                 [n for n in names if n not in GPU_SUBJECTS + NAMED_ONLY])
    unknown = [s for s in subjects if s not in names]
    if unknown:
        raise UsageError(f"unknown subject(s) {', '.join(unknown)}; available: "
                         f"{', '.join(names)}")
    if args.list:
        print("\n".join(names))
        return 0
    env = dict(os.environ)
    root = Path.cwd()
    if package == "benchmarks":  # a checkout: run from its root, with it on the path
        root = bench_dir.parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    failed = []
    for name in subjects:
        cmd = [sys.executable, "-m", f"{package}.bench_{name}"]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--no-save"] if args.no_save else []
        print(f"== minitl bench {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        # one process per subject: thread pools and caches of one never bias the next
        rc = subprocess.call(cmd, cwd=root, env=env)
        print(f"== {name}: {'ok' if rc == 0 else f'failed (exit {rc})'} in "
              f"{time.perf_counter() - t0:.0f} s\n", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        raise UserError(f"failed: {', '.join(failed)} (their output is above)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("subjects", nargs="*", metavar="SUBJECT",
                   help="benchmarks to run: ops, train_step, gemm, lora, llama, cuda (default: "
                        "all of --device's but llama)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="with no SUBJECT: the CPU benchmarks, or (cuda) bench_cuda's GPU set")
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds")
    p.add_argument("--no-save", action="store_true",
                   help="do not write JSON rows under benchmarks/results/")
    p.add_argument("--list", action="store_true", help="list the subjects and exit")
