"""Type names shared across minitl.

`Array` is what ops and kernels compute on: a numpy.ndarray on the CPU, a cupy.ndarray on the
GPU. minitl does not import CuPy to type-check, so it is `Any` to the checker; the name says
which values are raw arrays (ops' forward/backward, kernels) and which are Tensors.
"""

from typing import Any

__all__ = ["Array"]

Array = Any  # numpy.ndarray or cupy.ndarray
