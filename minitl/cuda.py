"""`mt.cuda`: whether minitl can run on a GPU (`torch.cuda.is_available` and
`device_count`).

The GPU path needs CuPy and a visible NVIDIA device. These functions import CuPy only when
called (never at `import minitl`) and answer False / 0 instead of raising when either is
missing or the driver cannot be reached.
"""

from __future__ import annotations

__all__ = ["device_count", "is_available"]


def device_count() -> int:
    """How many CUDA devices CuPy sees; 0 without CuPy, a driver or a GPU."""
    try:
        import cupy
    except ImportError:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - CUDARuntimeError without a driver, among others
        return 0


def is_available() -> bool:
    """True when tensors can go to device "cuda"."""
    return device_count() > 0
