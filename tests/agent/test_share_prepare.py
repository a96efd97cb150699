"""prepare(): a share's collection, bundle and archive in a private work folder, and its removal."""

from __future__ import annotations

import sys

import pytest

from agent.diagnostics.cpu_sample import CpuSample
from agent.share import ShareRequest, prepare

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="collects from this Linux PC")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("HELPLINE_AGENT_CONFIG", raising=False)
    return tmp_path


def test_the_unredacted_staging_goes_and_the_archive_stays_until_discarded(isolated) -> None:
    prepared = prepare(ShareRequest(what="printer", deadline=20), work_root=isolated / "work", cpu_sample=CpuSample())
    assert prepared.archive.is_file() and prepared.size == prepared.archive.stat().st_size
    assert prepared.report_html.is_file()
    assert prepared.removal is not None
    prepared.removal.join(60)
    assert not (prepared.work_dir / "staging").exists()
    assert prepared.archive.is_file() and prepared.report_html.is_file(), "only the staging directory went"
    prepared.discard()
    assert not prepared.work_dir.exists()
    prepared.discard()  # twice is harmless


def test_discarding_in_the_background_removes_the_whole_work_folder(isolated) -> None:
    prepared = prepare(ShareRequest(deadline=20), work_root=isolated / "work")
    moved = isolated / "outbox.tar.gz"
    prepared.archive.rename(moved)  # as the outbox takes it
    prepared.discard_in_background()
    prepared.discard()  # waits for the background removal
    assert not prepared.work_dir.exists()
    assert moved.is_file()
    assert list((isolated / "work").iterdir()) == []
