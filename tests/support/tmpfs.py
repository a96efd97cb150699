"""Problems a test can plant on this machine: a full tmpfs and a file system out of inodes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(target: Path, options: str) -> None:
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip() or done.returncode}")


@contextmanager
def full_and_starved_tmpfs(root: Path) -> Iterator[tuple[Path, Path]]:
    """Mount (under ``root``) one tmpfs filled to the brim and one with every inode used; unmount after.

    Skips the test where mounting is not permitted.
    """
    full, starved = root / "full-tmpfs", root / "no-inodes"
    mounted: list[Path] = []
    try:
        _mount(full, "size=1m,nr_inodes=1024")
        mounted.append(full)
        with open(full / "filler", "wb") as handle:
            try:
                handle.write(b"\0" * (2 * 1024 * 1024))
            except OSError:
                pass  # no space left: full, as planted
        _mount(starved, "size=1m,nr_inodes=64")
        mounted.append(starved)
        for index in range(100):  # bounded: 64 inodes run out first
            try:
                (starved / f"f{index}").touch()
            except OSError:
                break  # no inodes left
        yield full, starved
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=10)
