"""Full tmpfs mounts and file systems out of inodes, which psutil's disk list skips: planted for
real on a small tmpfs (root only; skipped where mounting is not permitted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.diagnostics.collectors.hardware import HardwareCollector, inode_usage, tmpfs_mounts
from tests.support.tmpfs import full_and_starved_tmpfs


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """One tmpfs filled to the brim, one with every inode used."""
    with full_and_starved_tmpfs(tmp_path) as (full, starved):
        yield {"full": full, "starved": starved}


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
