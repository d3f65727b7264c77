"""File helpers shared by the tokenizers: atomic JSON writes and checked JSON reads."""

from __future__ import annotations

import json
import os
import re
from typing import Any

__all__ = ["atomic_write_text", "read_json", "write_json"]

# Bumped when a saved tokenizer file changes shape; loaders refuse newer versions.
FORMAT_VERSION = 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the new one.

    Through minitl.io's atomic write: a temporary file in the same directory, fsynced, given
    the usual umask-respecting mode (0644 under umask 022) and renamed over ``path``; a
    failure removes it.
    """
    from minitl.io.safetensors import atomic_write

    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike[str], kind: str, payload: dict[str, Any]) -> None:
    """Save ``payload`` tagged with the tokenizer ``kind`` and the format version.

    Characters are written as themselves (readable UTF-8), except lone surrogates (a
    CharTokenizer trained on ``errors="surrogateescape"`` text has them), which UTF-8
    cannot hold: they become ``\\udXXX`` escapes, which ``json.load`` reads back.
    """
    doc = {"type": kind, "version": FORMAT_VERSION, **payload}
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(path, _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


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
