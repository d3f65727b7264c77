"""minitl's on/off environment variables, each refused by name when misspelt."""

from __future__ import annotations

import os


def switch(name: str, off: str, on: str) -> bool:
    """The variable `name` as 0 or 1 (default 1); ValueError saying what each value means
    (`off`, `on`) for anything else."""
    value = os.environ.get(name, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{name} must be 0 ({off}) or 1 ({on}), got {value!r}")
    return value == "1"
