"""Output paths checked before the work that fills them: a run that can only find out at the
end that its weights file cannot be written loses the whole run.

The checks create nothing. A path passes when it is not of the wrong kind (a directory
where a file belongs, or the other way round) and its nearest existing ancestor is a
directory this process may write in, so the directories still missing can be made later.
"""

from __future__ import annotations

import os

__all__ = ["OutputPathError", "check_output_dir", "check_output_file"]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names it and why."""


def _usable_dir(directory: str, what: str, path: str) -> None:
    probe = os.path.abspath(directory)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):  # a file, or a symbolic link to nowhere, on the way
        raise OutputPathError(f"{what} {path!r}: {probe!r} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path!r}: no permission to write in {probe!r}")


def check_output_file(path: str | os.PathLike[str], what: str = "output") -> None:
    """Raise OutputPathError unless a file can be written at `path`: not a directory, its
    directory existing or creatable and writable. `what` names the path in the message
    (e.g. "--out")."""
    text = os.fspath(path)
    if not text:
        raise OutputPathError(f"{what}: empty path")
    if os.path.isdir(text) or text.endswith(("/", os.sep)):
        raise OutputPathError(f"{what} {text!r} is a directory; expected a file name")
    _usable_dir(os.path.dirname(os.path.abspath(text)), what, text)


def check_output_dir(path: str | os.PathLike[str], what: str = "output directory") -> None:
    """Raise OutputPathError unless `path` is, or can be made, a writable directory."""
    text = os.fspath(path)
    if not text:
        raise OutputPathError(f"{what}: empty path")
    if os.path.lexists(text) and not os.path.isdir(text):
        raise OutputPathError(f"{what} {text!r} is a file; expected a directory")
    _usable_dir(text, what, text)
