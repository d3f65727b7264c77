"""docs/internals.md names real things: every path it quotes exists and every dotted
`minitl.` name it quotes resolves, so the tour cannot drift from the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "internals.md"
SUFFIXES = (".py", ".cpp", ".h", ".cu", ".cuh", ".md", ".toml")


def quoted() -> list[str]:
    return re.findall(r"`([^`\n]+)`", DOC.read_text(encoding="utf-8"))


def quoted_paths() -> list[str]:
    out = []
    for q in quoted():
        for part in re.split(r"\s+on\s+|,\s*", q):
            part = part.strip()
            if "/" in part and " " not in part and (part.endswith(SUFFIXES)
                                                    or part.endswith("/")):
                out.append(part)
    return sorted(set(out))


def quoted_names() -> list[str]:
    return sorted({q for q in quoted() if re.fullmatch(r"minitl(\.[A-Za-z_]\w*)+", q)})


def resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_the_tour_quotes_enough_to_be_checked() -> None:
    assert len(quoted_paths()) >= 30 and len(quoted_names()) >= 8


@pytest.mark.parametrize("path", quoted_paths())
def test_every_quoted_path_exists(path: str) -> None:
    found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] * (ROOT / path).exists()
    assert found, f"docs/internals.md names {path}, which matches nothing"


@pytest.mark.parametrize("name", quoted_names())
def test_every_quoted_minitl_name_resolves(name: str) -> None:
    resolve(name)


def test_every_kernel_the_tour_names_is_a_backend_kernel() -> None:
    from minitl.backend import CPU_LOOP_KERNELS, KERNELS

    named = set(re.findall(r"`(?:ctx\.backend\.)?(\w+_(?:fwd|bwd))`", DOC.read_text()))
    assert named and named <= set(KERNELS + CPU_LOOP_KERNELS)
