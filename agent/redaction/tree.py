"""Walk a staging tree without following links and report every entry, including the ones we refuse."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FILE = "file"
SYMLINK = "symlink"
SPECIAL = "special"  # FIFO, socket, device: opening one could block or read a device
UNREADABLE = "unreadable"  # a directory that cannot be listed


@dataclass(frozen=True)
class TreeEntry:
    """One entry under the root: its POSIX-style relative path, absolute path and what it is."""

    relpath: str
    path: Path
    kind: str
    error: str | None = None


def walk(root: Path) -> Iterator[TreeEntry]:
    """Yield every non-directory entry under ``root`` in sorted order, never descending into symlinks."""
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
        while errors:
            yield _unreadable(root, errors.pop(0))
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)  # os.walk would not descend anyway; report it instead
                yield TreeEntry(_rel(root, here / name), here / name, SYMLINK)
        for name in sorted(filenames):
            yield _classify(root, here / name)
    while errors:
        yield _unreadable(root, errors.pop(0))


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _unreadable(root: Path, error: OSError) -> TreeEntry:
    path = Path(error.filename) if error.filename else root
    try:
        rel = _rel(root, path)
    except ValueError:
        rel = path.as_posix()
    return TreeEntry(rel, path, UNREADABLE, error.strerror or type(error).__name__)


def _classify(root: Path, path: Path) -> TreeEntry:
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        return TreeEntry(_rel(root, path), path, UNREADABLE, error.strerror or type(error).__name__)
    if stat.S_ISLNK(mode):
        kind = SYMLINK
    elif stat.S_ISREG(mode):
        kind = FILE
    else:
        kind = SPECIAL
    return TreeEntry(_rel(root, path), path, kind)
