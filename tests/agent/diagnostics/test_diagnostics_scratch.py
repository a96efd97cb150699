"""Full tmpfs mounts and file systems out of inodes, which psutil's disk list skips: planted for
real on a small tmpfs (root only; skipped where mounting is not permitted)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.diagnostics.collectors.hardware import HardwareCollector, inode_usage, tmpfs_mounts


def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """One tmpfs filled to the brim, one with every inode used."""
    full, starved = tmp_path / "full-tmpfs", tmp_path / "no-inodes"
    mounted = []
    try:
        _mount_tmpfs(full, "size=1m,nr_inodes=1024")
        mounted.append(full)
        with open(full / "filler", "wb") as handle:
            try:
                handle.write(b"\0" * (2 * 1024 * 1024))
            except OSError:
                pass  # ENOSPC: full, as intended
        _mount_tmpfs(starved, "size=1m,nr_inodes=64")
        mounted.append(starved)
        for index in range(100):
            try:
                (starved / f"f{index}").touch()
            except OSError:
                break
        yield {"full": full, "starved": starved}
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=10)


def test_inode_usage_of_a_real_file_system(tmp_path):
    usage = inode_usage(str(tmp_path))
    if usage["inodes_total"] is not None:
        assert 0 <= usage["inodes_percent"] <= 100 and usage["inodes_free"] <= usage["inodes_total"]
    assert inode_usage(str(tmp_path / "missing"))["inodes_percent"] is None


def test_full_tmpfs_and_inode_exhaustion_are_flagged(planted, make_ctx):
    mounts = {m["mountpoint"]: m for m in tmpfs_mounts()}
    assert mounts[str(planted["full"])]["percent"] == 100.0
    assert mounts[str(planted["starved"])]["inodes_percent"] == 100.0

    facts = HardwareCollector().collect(make_ctx("linux", category="hardware"))
    assert str(planted["full"]) in {m["mountpoint"] for m in facts["tmpfs_full"]}
    assert str(planted["starved"]) not in {m["mountpoint"] for m in facts["tmpfs_full"]}
    starved = {m["mountpoint"]: m for m in facts["inode_full"]}[str(planted["starved"])]
    assert starved["inodes_percent"] == 100.0 and starved["inodes_free"] == 0
