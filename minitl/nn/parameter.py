"""Parameter: a Tensor that a Module registers as trainable state."""

from __future__ import annotations

from typing import Any

from minitl.tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor that `Module.__setattr__` registers; requires grad by default."""

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            import numpy as np

            data = np.zeros((0,), dtype=np.float32)
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
