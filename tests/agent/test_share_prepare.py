"""prepare(): a share's collection, bundle and archive in a private work folder, and its removal."""

from __future__ import annotations

import sys

import pytest

from agent.diagnostics.cpu_sample import CpuSample
from agent.share import ShareRequest, prepare

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="collects from this Linux PC")


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


def _gone_pid() -> int:
    """The id of a process that has ended."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=60)
    return int(done.stdout)


def _folder(root, name, *, age_seconds=0.0, kept_seconds_ago=None):
    import os
    import time

    folder = root / name
    (folder / "staging" / "logs").mkdir(parents=True)
    (folder / "staging" / "logs" / "raw.log").write_text("password=unredacted\n")
    if kept_seconds_ago is not None:
        (folder / ".kept").touch()
        os.utime(folder / ".kept", (time.time() - kept_seconds_ago,) * 2)
    os.utime(folder, (time.time() - age_seconds,) * 2)
    return folder


def _wait_gone(paths) -> None:
    import time

    for _ in range(600):
        if not any(p.exists() for p in paths):
            return
        time.sleep(0.05)


def test_a_new_share_removes_the_work_folders_no_share_will_finish(tmp_path) -> None:
    import os
    import subprocess

    from agent.share import KEPT_SECONDS, UNOWNED_SECONDS, new_work_folder

    root = tmp_path / "work"
    root.mkdir()
    gone = _gone_pid()
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        crashed = _folder(root, f"share-{gone}-a1b2c3")
        ours = _folder(root, f"share-{os.getpid()}-d4e5f6")
        running = _folder(root, f"share-{living.pid}-g7h8i9")
        older_helpline = _folder(root, "share-q1w2e3r4", age_seconds=UNOWNED_SECONDS + 60)
        young_unowned = _folder(root, "share-t5y6u7i8")
        preview = _folder(root, f"share-{gone}-kept01", kept_seconds_ago=60)
        old_preview = _folder(root, f"share-{gone}-kept02", kept_seconds_ago=KEPT_SECONDS + 60)
        other = _folder(root, "outbox", age_seconds=UNOWNED_SECONDS + 60)
        elsewhere = _folder(tmp_path, "elsewhere")
        (root / f"share-{gone}-link").symlink_to(elsewhere, target_is_directory=True)

        made = new_work_folder(root)
        _wait_gone([crashed, older_helpline, old_preview, preview / "staging"])
        assert made.name.startswith(f"share-{os.getpid()}-") and made.is_dir() and not any(made.iterdir())
        for removed in (crashed, older_helpline, old_preview, preview / "staging"):
            assert not removed.exists(), removed.name
        for untouched in (ours, running, young_unowned, other):
            assert (untouched / "staging" / "logs" / "raw.log").is_file(), untouched.name
        assert (preview / ".kept").is_file(), "a preview the person was told of stays a week"
        assert (elsewhere / "staging" / "logs" / "raw.log").is_file(), "a link is not followed"
    finally:
        living.kill()
        living.wait(30)


def test_a_kept_preview_has_no_staging_and_its_mark(isolated) -> None:
    from agent.share import KEPT_MARKER, new_work_folder

    prepared = prepare(ShareRequest(deadline=20), work_root=isolated / "work")
    prepared.keep()
    assert (prepared.work_dir / KEPT_MARKER).is_file() and not (prepared.work_dir / "staging").exists()
    assert prepared.report_html.is_file()
    new_work_folder(isolated / "work")  # this process runs: its kept folder stays
    assert prepared.report_html.is_file()
    prepared.discard()


def test_a_helper_thread_is_deaf_to_ctrl_c_from_its_first_instruction() -> None:
    import signal
    import threading

    from agent.share import start_deaf_to_ctrl_c

    masks = []
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    thread = threading.Thread(target=lambda: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, set())))
    start_deaf_to_ctrl_c(thread)
    thread.join(30)
    assert signal.SIGINT in masks[0], "a Ctrl-C could go to the helper and leave the question waiting"
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before, "the main thread still hears Ctrl-C"
