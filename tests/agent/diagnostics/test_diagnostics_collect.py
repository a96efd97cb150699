"""collect(): a full run on this PC, the global and per-collector deadlines, failure isolation,
and selection of categories."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from agent.diagnostics.collectors.software import package_versions

from agent.diagnostics import collect
from agent.diagnostics.collectors import collectors_for
from agent.diagnostics.collectors.base import ALL_PLATFORMS, Collector
from agent.diagnostics.collectors.environment import EnvironmentCollector
from agent.diagnostics.context import CollectContext, CollectOptions
from agent.diagnostics.model import CollectionReport, CollectorStatus, ItemStatus
from protocol.errors import InvalidInputError

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="collects from this Linux PC")


class HangingCollector(Collector):
    """Writes one item, then blocks until released; afterwards tries to write again."""

    name = "hang"
    category = "hang"
    description = "Hangs until the test releases it, to exercise the deadlines."
    platforms = ALL_PLATFORMS
    timeout = 30.0

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        self.late_write: BaseException | None = None

    def collect(self, ctx: CollectContext) -> dict:
        ctx.write_text("hang/before.txt", "written in time\n")
        self.release.wait(60)
        try:
            ctx.write_text("hang/after.txt", "written too late\n")
        except BaseException as exc:  # noqa: BLE001 - the test inspects what happened
            self.late_write = exc
        finally:
            self.finished.set()
        return {"finished": True}


class SleepingCommandCollector(Collector):
    """Runs a command that would sleep far past any deadline."""

    name = "sleeper"
    category = "sleeper"
    description = "Runs a 30-second sleep to prove commands die with the deadline."
    platforms = ALL_PLATFORMS
    timeout = 30.0

    def collect(self, ctx: CollectContext) -> dict:
        script = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"
        item = ctx.run("sleeper/sleep.txt", (sys.executable, "-c", script))
        return {"status": item.status.value}


class RaisingCollector(Collector):
    name = "broken"
    category = "broken"
    description = "Raises, as a collector with a bug would."
    platforms = ALL_PLATFORMS
    timeout = 5.0

    def collect(self, ctx: CollectContext) -> dict:
        ctx.write_text("broken/partial.txt", "got this far\n")
        raise RuntimeError("parser exploded on line 3")


@linux_only
def test_full_collect_on_this_pc(tmp_path: Path):
    stage = tmp_path / "stage"
    seen: list[tuple[str, str]] = []
    started = time.monotonic()
    report = collect(CollectOptions(), stage, progress=lambda name, status: seen.append((name, status)))
    elapsed = time.monotonic() - started

    assert elapsed < 12, f"collect() took {elapsed:.1f} s of its 20 s budget"
    assert report.platform == "linux"
    assert {r.category for r in report.results} == {c.category for c in collectors_for("linux")}
    for result in report.results:
        assert result.status is CollectorStatus.OK, (result.name, result.error)
        assert (stage / result.category / "facts.json").is_file()
    assert ("system", "running") in seen and ("system", "ok") in seen

    software = report.result("software").facts
    if shutil.which("dpkg-query"):
        assert software["package_manager"] == "dpkg"
        packages_file = json.loads((stage / "software/packages.json").read_text())
        assert software["package_count"] == len(package_versions(packages_file["packages"])) > 50
        assert "dpkg" in package_versions(packages_file["packages"])
        assert "packages" not in software  # the list is in packages.json only, not a second time in facts.json
    system = report.result("system").facts
    assert system["os"]["family"] == "linux" and system["kernel"]["release"]
    assert report.result("processes").facts["count"] >= 1
    assert report.result("hardware").facts["memory"]["total"] == psutil.virtual_memory().total

    # The report is plain JSON, survives a round trip, and accounts for every staged file.
    data = json.loads(json.dumps(report.to_dict()))
    assert CollectionReport.from_dict(data).to_dict() == report.to_dict()
    staged = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}
    produced = {i.path for i in report.items if i.status in (ItemStatus.OK, ItemStatus.TRUNCATED,
                                                             ItemStatus.ERROR, ItemStatus.TIMEOUT)}
    assert staged == produced


def test_a_hanging_collector_times_out_at_the_global_deadline_and_others_finish(tmp_path: Path):
    hang, broken = HangingCollector(), RaisingCollector()
    environment = EnvironmentCollector()
    statuses: dict[str, str] = {}
    started = time.monotonic()
    try:
        report = collect(CollectOptions(deadline=1.5, collector_timeout=30), tmp_path / "stage",
                         collectors=[hang, broken, environment],
                         progress=lambda name, status: statuses.__setitem__(name, status))
        elapsed = time.monotonic() - started
        assert elapsed < 1.5 + 2, f"collect() returned after {elapsed:.1f} s"

        by_name = {r.name: r for r in report.results}
        assert by_name["hang"].status is CollectorStatus.TIMEOUT
        assert [item.path for item in by_name["hang"].items] == ["hang/before.txt"]
        assert by_name["broken"].status is CollectorStatus.ERROR
        assert "parser exploded on line 3" in by_name["broken"].error
        assert [item.path for item in by_name["broken"].items] == ["broken/partial.txt"]
        assert by_name["environment"].status is CollectorStatus.OK
        assert statuses == {"hang": "timeout", "broken": "error", "environment": "ok"}
        json.dumps(report.to_dict())
    finally:
        hang.release.set()
    # Released after the report was made, the late collector cannot add to the staging dir.
    assert hang.finished.wait(5)
    assert hang.late_write is not None and "deadline" in str(hang.late_write)
    assert not (tmp_path / "stage" / "hang" / "after.txt").exists()


def test_a_collector_past_its_own_limit_times_out_early(tmp_path: Path):
    hang = HangingCollector()
    started = time.monotonic()
    try:
        report = collect(CollectOptions(deadline=10, collector_timeout=0.5), tmp_path / "stage",
                         collectors=[hang, EnvironmentCollector()])
    finally:
        hang.release.set()
    assert time.monotonic() - started < 3, "the 0.5 s per-collector limit was not enforced"
    assert report.result("hang").status is CollectorStatus.TIMEOUT
    assert report.result("environment").status is CollectorStatus.OK


def test_commands_still_running_at_the_deadline_are_killed(tmp_path: Path):
    sleeper = SleepingCommandCollector()
    started = time.monotonic()
    report = collect(CollectOptions(deadline=1.0), tmp_path / "stage", collectors=[sleeper])
    assert time.monotonic() - started < 3
    result = report.result("sleeper")
    # The command was killed at the deadline; the collector then finished within the grace period.
    assert result.status in (CollectorStatus.OK, CollectorStatus.TIMEOUT)
    pid = int((tmp_path / "stage" / "sleeper" / "sleep.txt").read_text().split()[0])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and psutil.pid_exists(pid) and \
            psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    if result.status is CollectorStatus.OK:
        assert result.items[0].status is ItemStatus.TIMEOUT


def test_categories_and_exclude_select_collectors(tmp_path: Path):
    report = collect(CollectOptions(categories={"system", "environment"}, exclude={"environment"}),
                     tmp_path / "stage", platform="linux")
    statuses = {r.name: r.status for r in report.results}
    assert statuses["system"] is CollectorStatus.OK
    assert statuses["environment"] is CollectorStatus.SKIPPED
    assert report.result("environment").error == "excluded by options"
    assert all(status is CollectorStatus.SKIPPED for name, status in statuses.items()
               if name not in ("system", "environment"))
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["system"]


def test_unknown_category_and_dirty_staging_dir_are_refused(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="bogus"):
        collect(CollectOptions(categories={"bogus"}), tmp_path / "a", platform="linux")
    dirty = tmp_path / "dirty"
    dirty.mkdir()
    (dirty / "leftover.txt").write_text("old bundle\n")
    with pytest.raises(InvalidInputError, match="not empty"):
        collect(CollectOptions(), dirty, platform="linux")
