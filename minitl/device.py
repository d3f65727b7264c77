"""`mt.device`: where a tensor's memory lives, spelled as in PyTorch ("cpu", "cuda",
"cuda:1", or `mt.device("cuda", 1)`).

A Device is a `str` subclass, so every place that takes a device (creation functions,
`Tensor.to`, `Module.to`, `get_backend`) accepts one where it accepts a string, and it
compares equal to its own spelling (`mt.device("cuda:0") == "cuda:0"`). Like
`torch.device`, "cuda" (the current GPU) and "cuda:0" are different values.
"""

from __future__ import annotations

from typing import Any, Self

_TYPES = ("cpu", "cuda")


class Device(str):
    """A device: `.type` ("cpu" | "cuda") and `.index` (int, or None for "the current one").

    Args:
        type: "cpu", "cuda", "cuda:<index>", or another Device.
        index: the device ordinal, when `type` carries none.
    """

    def __new__(cls, type: Any, index: int | None = None) -> Self:
        if isinstance(type, cls) and index is None:
            return type
        spec = str(type)
        kind, sep, ordinal = spec.partition(":")
        if kind not in _TYPES:
            raise ValueError(f"unknown device {spec!r}; expected 'cpu' or 'cuda' (optionally "
                             f"with an index, 'cuda:1')")
        if sep:
            if index is not None:
                raise ValueError(f"device {spec!r} already has an index; got index={index}")
            if not ordinal.isdigit():
                raise ValueError(f"invalid device string {spec!r}: the index must be a "
                                 f"non-negative integer")
            index = int(ordinal)
        if index is not None:
            if isinstance(index, bool) or int(index) != index or index < 0:
                raise ValueError(f"device index must be a non-negative int, got {index!r}")
            spec = f"{kind}:{int(index)}"
        return super().__new__(cls, spec)

    @property
    def type(self) -> str:
        return self.partition(":")[0]

    @property
    def index(self) -> int | None:  # type: ignore[override]  # torch.device.index, not str.index
        ordinal = self.partition(":")[2]
        return int(ordinal) if ordinal else None

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    __hash__ = str.__hash__


device = Device
