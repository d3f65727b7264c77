"""File helpers shared by the tokenizers: atomic JSON writes and checked JSON reads."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "read_json", "write_json"]

# Bumped when a saved tokenizer file changes shape; loaders refuse newer versions.
FORMAT_VERSION = 1


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the new one.

    The bytes go to a temporary file in the same directory (same filesystem, so the final
    ``os.replace`` is atomic), which is flushed and fsynced first; a failure removes it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | os.PathLike[str], kind: str, payload: dict[str, Any]) -> None:
    """Save ``payload`` tagged with the tokenizer ``kind`` and the format version."""
    doc = {"type": kind, "version": FORMAT_VERSION, **payload}
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")


def read_json(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Load a file written by :func:`write_json`, checking its ``type`` and ``version``."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("type") != kind:
        found = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{os.fspath(path)}: expected a {kind} file, found type {found!r}")
    version = doc.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{os.fspath(path)}: unsupported {kind} format version {version!r}")
    return doc
