"""The house rule on file size: no source file over 600 lines (STYLE.md's hard cap). A file
that grows past it is split by what its parts do, not trimmed to fit."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAP = 600
SOURCE_DIRS = ("minitl", "csrc", "tests", "benchmarks", "examples", "dev")
SUFFIXES = {".py", ".cpp", ".h", ".hpp", ".cu", ".cuh", ".sh"}


def source_files() -> list[Path]:
    files = [ROOT / "setup.py"]
    for top in SOURCE_DIRS:
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()
                  and "__pycache__" not in p.parts and "build" not in p.parts]
    return sorted(files)


def test_no_source_file_is_over_the_cap() -> None:
    files = source_files()
    assert len(files) > 100  # the walk found the tree
    over = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text(encoding="utf-8", errors="replace").splitlines())) > CAP}
    assert not over, f"over {CAP} lines: {over}"
