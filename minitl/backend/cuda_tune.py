"""Tile shapes of the CUDA GEMMs and the autotuner that picks one per shape class.

The tables mirror the explicit instantiations at the bottom of csrc/cuda/sgemm.cu, lora.cu,
gemm_mma.cu and gemm_wgmma.cu (a CPU test checks that they agree); a tile is compiled only when
a shape first needs it, as a CuPy `name_expressions` entry.

Autotuning: the first GEMM of a shape class (each of M, N, K bucketed as <= 64, <= 1024 or
larger, plus the transposes and the precision) times every candidate tile on the real operands
(a few launches each, CUDA events) and keeps the fastest. Choices persist per GPU model in
`~/.cache/minitl/cuda/autotune-<gpu>.json`. `MINITL_CUDA_AUTOTUNE=0` skips the timing and uses the
first candidate (the heuristic default), which is what the tests do.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

# ---- SIMT SGEMM (csrc/cuda/sgemm.cu): name -> (BM, BN, BK, WM, WN, WNITER, TM, TN) ------------
SIMT_TILES: dict[str, tuple[int, ...]] = {
    "128x128x16": (128, 128, 16, 64, 64, 4, 8, 4),  # 128 threads, 8x16 outputs each
    "128x128x8": (128, 128, 8, 64, 32, 2, 8, 4),  # 256 threads, 8x8 outputs each
    "128x64x16": (128, 64, 16, 64, 32, 2, 8, 4),
    "64x64x16": (64, 64, 16, 32, 32, 2, 4, 4),
    "32x128x16": (32, 128, 16, 32, 32, 2, 4, 4),  # skinny M (e.g. dA = gB^T x with M = r)
    "128x32x16": (128, 32, 16, 32, 32, 2, 4, 4),  # skinny N (e.g. xa = x A^T with N = r)
}
# Fused LoRA forward (csrc/cuda/lora.cu): these tiles x these rank tiles (rank r <= tile).
LORA_TILES = ("128x128x8", "64x64x16")
LORA_RANKS = (16, 32, 64)
LORA_BWD_RANKS = (16, 32, 64)
# ---- tensor cores, mma.sync (csrc/cuda/gemm_mma.cu): name -> (BM, BN, WM, WN, STAGES) ----------
MMA_TILES: dict[str, tuple[int, ...]] = {
    "128x128": (128, 128, 64, 32, 3),
    "128x64": (128, 64, 64, 32, 4),
    "64x64": (64, 64, 32, 32, 4),
}
WGMMA_STAGES = 4  # csrc/cuda/gemm_wgmma.cu, 128x128 tiles, two warpgroups


def _b(v: bool) -> str:
    return "true" if v else "false"


def simt_threads(tile: str) -> int:
    bm, bn, _, wm, wn = SIMT_TILES[tile][:5]
    return (bm // wm) * (bn // wn) * 32


def simt_smem_bytes(tile: str, lr: int = 0) -> int:
    """Dynamic shared memory of one CTA (simt_smem_floats in sgemm.cuh)."""
    bm, bn, bk = SIMT_TILES[tile][:3]
    floats = 2 * bk * (bm + 4) + 2 * bk * (bn + 4)
    if lr:
        floats += 2 * bk * lr + lr * (bm + 4)
    return 4 * floats


def sgemm_expr(tile: str, trans_a: bool, trans_b: bool, lr: int = 0) -> str:
    dims = ", ".join(str(v) for v in SIMT_TILES[tile])
    return f"sgemm<{dims}, {_b(trans_a)}, {_b(trans_b)}, {lr}>"


def mma_threads(tile: str) -> int:
    bm, bn, wm, wn, _ = MMA_TILES[tile]
    return (bm // wm) * (bn // wn) * 32


def mma_smem_bytes(tile: str) -> int:
    bm, bn, _, _, stages = MMA_TILES[tile]
    return stages * (bm + bn) * (128 + 16)


def mma_expr(tile: str, bf16: bool) -> str:
    bm, bn, wm, wn, stages = MMA_TILES[tile]
    return f"gemm_mma<{bm}, {bn}, {wm}, {wn}, {stages}, {_b(bf16)}>"


def wgmma_expr(bf16: bool) -> str:
    return f"gemm_wgmma<{WGMMA_STAGES}, {_b(bf16)}>"


def wgmma_smem_bytes() -> int:
    return WGMMA_STAGES * 2 * 128 * 128 + 2048  # tiles + alignment slack and mbarriers


def lora_bwd_expr(rank_tile: int) -> str:
    return f"lora_bwd_gb_db<{rank_tile}>"


def lora_bwd_smem_bytes(rank_tile: int) -> int:
    return 4 * (64 * 68 + 64 * rank_tile + 2 * 64 * rank_tile)


def rank_tile(r: int, tiles: tuple[int, ...] = LORA_RANKS) -> int | None:
    """The smallest rank tile >= r, or None when r is larger than all of them."""
    return next((t for t in tiles if r <= t), None)


def all_instantiations() -> dict[str, list[str]]:
    """Every expression the Python side may ask for, by source file
    (tests/test_cuda_instantiations.py checks each against the .cu file's explicit
    instantiations)."""
    return {
        "sgemm.cu": [sgemm_expr(t, ta, tb) for ta in (False, True) for tb in (False, True)
                     for t in SIMT_TILES],
        "lora.cu": [sgemm_expr(t, False, True, lr) for t in LORA_TILES for lr in LORA_RANKS]
        + [lora_bwd_expr(r) for r in LORA_BWD_RANKS],
        "gemm_mma.cu": [mma_expr(t, bf) for bf in (False, True) for t in MMA_TILES],
        "gemm_wgmma.cu": [wgmma_expr(bf) for bf in (True, False)],
    }


# ---- shape classes and candidates -------------------------------------------------------------


def size_class(v: int) -> str:
    return "s" if v <= 64 else ("m" if v <= 1024 else "l")


def shape_class(m: int, n: int, k: int) -> str:
    return size_class(m) + size_class(n) + size_class(k)


def simt_candidates(m: int, n: int, k: int) -> list[str]:
    """Tiles worth timing for C (m, n) with depth k; the first is the untuned default."""
    if m <= 64:
        return ["32x128x16", "64x64x16"]
    if n <= 64:
        return ["128x32x16", "64x64x16"]
    if m * n <= 1024 * 1024:
        return ["128x64x16", "64x64x16", "128x128x8"]
    return ["128x128x16", "128x128x8", "128x64x16"]


def mma_candidates(m: int, n: int, k: int) -> list[str]:
    if m * n <= 1024 * 1024:
        return ["128x64", "64x64", "128x128"]
    return ["128x128", "128x64"]


def split_k(ctas: int, k: int, bk: int, sms: int) -> tuple[int, int]:
    """(slices, K per slice) for split-K: only when the M x N grid leaves most SMs idle and K
    is long; each slice is a whole number of BK tiles."""
    if ctas >= sms // 2 or k < 2048:
        return 1, k
    slices = max(1, min(sms // max(ctas, 1), k // 512, 16))
    per = -(-k // slices)
    per = -(-per // bk) * bk
    return -(-k // per), per


# ---- the autotuner -------------------------------------------------------------------------------


def autotune_enabled() -> bool:
    return os.environ.get("MINITL_CUDA_AUTOTUNE", "1") not in ("0", "false", "no", "")


class Autotuner:
    """Remembers the fastest candidate per key; persists to a JSON file per GPU model."""

    def __init__(self, gpu_name: str, path: Path | None = None) -> None:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
        if path is None:
            base = os.environ.get("MINITL_CACHE_DIR") or os.path.join(
                os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "minitl")
            path = Path(base) / "cuda" / f"autotune-{slug}.json"
        self.path = path
        self._lock = threading.Lock()
        self.choices: dict[str, str] = {}
        self.timings: dict[str, dict[str, float]] = {}
        try:
            self.choices = dict(json.loads(self.path.read_text()).get("choices", {}))
        except (OSError, ValueError):
            pass

    def choose(self, key: str, candidates: list[str], bench: Callable[[str], float]) -> str:
        """The remembered choice for `key`, else time every candidate with `bench` (seconds,
        inf for one that fails) and remember the fastest."""
        known = self.choices.get(key)
        if known in candidates:
            return known  # type: ignore[return-value]
        if len(candidates) == 1 or not autotune_enabled():
            return candidates[0]
        times = {c: bench(c) for c in candidates}
        best = min(times, key=times.__getitem__)
        with self._lock:
            self.choices[key] = best
            self.timings[key] = times
            self._save()
        return best

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"choices": self.choices}, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home only costs re-tuning in the next process
