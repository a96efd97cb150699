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


class Held:
    """A collector that waits until the test lets it go, then writes its facts (or learns it may not)."""

    def __init__(self):
        import threading

        self.started, self.release, self.late_write = threading.Event(), threading.Event(), []

    def collector(self):
        from agent.diagnostics.collectors.base import ALL_PLATFORMS, Collector
        from agent.diagnostics.context import CollectionClosed

        held = self

        class HeldCollector(Collector):
            name = category = "held"
            platforms = ALL_PLATFORMS
            description = "waits for the test"
            timeout = 30.0

            def collect(self, ctx):
                held.started.set()
                held.release.wait(30)
                try:
                    ctx.write_text("held/late.txt", "written after the share stopped")
                    held.late_write.append("written")
                except CollectionClosed:
                    held.late_write.append("refused")
                return {}

        return HeldCollector()


def test_a_cancelled_collection_stops_waiting_and_takes_no_late_write(tmp_path) -> None:
    import threading

    from agent.diagnostics import collect
    from agent.diagnostics.collect import CollectionCancelled
    from agent.diagnostics.context import CollectOptions

    held, cancelled = Held(), threading.Event()
    stopped = []

    def run():
        try:
            collect(CollectOptions(), tmp_path / "staging", collectors=[held.collector()], cancelled=cancelled)
        except CollectionCancelled:
            stopped.append(True)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.started.wait(30)
    cancelled.set()
    thread.join(30)
    assert stopped == [True], "the collection stopped without waiting for its collector"
    held.release.set()
    for _ in range(600):
        if held.late_write:
            break
        threading.Event().wait(0.05)
    assert held.late_write == ["refused"]
    assert not (tmp_path / "staging" / "held").exists()


def test_the_answers_and_ticket_settled_while_gathering_reach_the_bundle(isolated) -> None:
    from agent.share import Gathering
    from protocol.archive import inspect_archive

    request = ShareRequest(deadline=20)
    gathering = Gathering(request, work_root=isolated / "work")
    request.what, request.since, request.tried = "Printer offline", "today", "nothing"  # typed meanwhile
    request.ticket, request.ticket_title = "T-1042", "Printer"
    heard: list[tuple[str, str]] = []
    prepared = gathering.result(progress=lambda *event: heard.append(event))
    assert ("processes", "ok") in heard, "the progress so far is replayed to a listener that comes late"
    try:
        listing = inspect_archive(prepared.archive)
        manifest = listing.read_member("manifest.json", 1 << 24).decode()
        assert '"ticket": "T-1042"' in manifest and '"what_happened": "Printer offline"' in manifest
    finally:
        prepared.discard()
    gathering.cancel()  # after the result: the bundle is the caller's, not removed
    assert list((isolated / "work").iterdir()) == []


def test_a_cancelled_gathering_removes_what_it_wrote(isolated, monkeypatch) -> None:
    import importlib

    from agent.share import Gathering

    collect_module = importlib.import_module("agent.diagnostics.collect")

    held = Held()
    monkeypatch.setattr(collect_module, "collectors_for", lambda platform: [held.collector()])
    progress = []
    gathering = Gathering(ShareRequest(deadline=20), work_root=isolated / "work")
    assert held.started.wait(30)
    assert [p.name for p in (isolated / "work").iterdir()], "the work folder exists while gathering"
    gathering.cancel()
    assert list((isolated / "work").iterdir()) == []
    held.release.set()
    with pytest.raises(collect_module.CollectionCancelled):
        gathering.result(progress=lambda *event: progress.append(event))
