"""How minitl's process gets memory for its arrays: glibc's malloc thresholds.

numpy takes each array's buffer from malloc. glibc serves a block above M_MMAP_THRESHOLD (128
KiB at start, raised as large blocks are freed, at most 32 MiB) with a fresh mmap and hands it
back with munmap when freed, and it gives back the top of its heap once more than
M_TRIM_THRESHOLD of it is free. A training step frees its activations and allocates them again
the next step, so every step faulted its activation memory in anew: on a Zen 5 under KVM a
resnet-mini step (N 64, one thread) took 32,000 minor page faults and 65 ms of system time
beside 89 ms of user time. `retain_freed_memory` raises both thresholds, so freed activations
stay in the heap for the next step (2 faults a step). It runs at `import minitl` unless
MINITL_RETAIN_MEMORY=0; the setting is the process's, so it holds for every library in it
(PyTorch's CPU tensors come from the same malloc). The price is memory kept: up to
`trim_threshold` of freed heap stays with the process instead of going back to the OS.
"""

from __future__ import annotations

import ctypes
import sys
import warnings
from typing import Any

from minitl import env

__all__ = ["memory_retained", "retain_at_import", "retain_freed_memory",
           "retain_memory_setting"]

# mallopt's parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems)
MAX_MMAP_THRESHOLD = 32 << 20

_retained = False


def retain_memory_setting() -> bool:
    """MINITL_RETAIN_MEMORY (default 1); ValueError for anything but 0 or 1."""
    return env.switch("MINITL_RETAIN_MEMORY", "malloc keeps glibc's defaults",
                      "freed arrays stay in the heap for reuse")


def _glibc_mallopt() -> Any:
    """glibc's mallopt, or None (not Linux, or another C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def retain_freed_memory(mmap_threshold: int = MAX_MMAP_THRESHOLD,
                        trim_threshold: int = 256 << 20) -> bool:
    """Serve blocks up to `mmap_threshold` bytes from the heap and keep up to `trim_threshold`
    bytes of freed heap in the process (glibc's mallopt); returns whether glibc took both. Does
    nothing and returns False off glibc. Setting either also ends glibc's own raising of the
    mmap threshold, so the thresholds stay where they are put."""
    global _retained
    for name, value, top in (("mmap_threshold", mmap_threshold, MAX_MMAP_THRESHOLD),
                             ("trim_threshold", trim_threshold, 2**31 - 1)):
        if isinstance(value, bool) or int(value) != value or not 0 <= value <= top:
            raise ValueError(f"retain_freed_memory: {name} must be an integer in [0, {top}] "
                             f"bytes, got {value!r}")
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    _retained = ok
    return ok


def memory_retained() -> bool:
    """True once `retain_freed_memory` has set glibc's thresholds in this process."""
    return _retained


def retain_at_import() -> None:
    """`retain_freed_memory()` unless MINITL_RETAIN_MEMORY=0. A misspelt value warns and leaves
    malloc alone rather than failing `import minitl` (the CLI refuses it as a usage error)."""
    try:
        retain = retain_memory_setting()
    except ValueError as e:
        warnings.warn(f"{e}; malloc keeps glibc's defaults", RuntimeWarning, stacklevel=3)
        return
    if retain:
        retain_freed_memory()
