"""BundleBuilder: files scrubbed while the collection still runs make the same bundle as build_bundle()."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent.bundle import build_bundle
from agent.bundle.build import BundleBuilder
from agent.diagnostics import collect
from agent.diagnostics.collectors.base import ALL_PLATFORMS, Collector
from agent.diagnostics.context import CollectOptions
from agent.diagnostics.model import CollectorStatus
from agent.redaction import RedactionOptions, Redactor
from protocol.errors import InvalidInputError
from tests.agent.bundle.conftest import FRAGMENTS, SECRETS, Collected, all_bytes


def raw_files(out: Path) -> dict[str, bytes]:
    root = out / "raw"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def items_by_path(manifest: dict) -> dict[str, tuple]:
    return {item["path"]: (item["file"], item["redaction"]["status"], item["sha256"]) for item in manifest["items"]}


def build_early(collected: Collected, out: Path, order) -> tuple:
    builder = BundleBuilder(collected.staging, out, redactor=Redactor(RedactionOptions()))
    for result in order(collected.report.results):
        builder.scrub_early(result)
    early_files = raw_files(out)
    return builder.finish(collected.report, extra={"ticket": "T-1042"}), early_files


@pytest.mark.parametrize("order", [list, lambda results: list(reversed(results))], ids=["report-order", "reversed"])
def test_scrubbing_early_makes_the_same_bundle(collected: Collected, tmp_path, order) -> None:
    whole = build_bundle(collected.report, collected.staging, tmp_path / "whole", redactor=Redactor(RedactionOptions()),
                         extra={"ticket": "T-1042"})
    early, scrubbed_before_finish = build_early(collected, tmp_path / "early", order)
    assert scrubbed_before_finish, "the files were scrubbed before the report was complete"
    assert raw_files(tmp_path / "early") == raw_files(tmp_path / "whole")
    assert items_by_path(early.manifest) == items_by_path(whole.manifest)
    assert early.summary == whole.summary
    leaked = [s for s in (*SECRETS, *FRAGMENTS) if s.encode() in all_bytes(tmp_path / "early")]
    assert not leaked


def test_a_file_scrubbed_early_moves_to_the_path_the_whole_report_gives_it(collected: Collected, tmp_path) -> None:
    """Early paths are unique among the files scrubbed so far; the final ones come from the report order."""
    early, _ = build_early(collected, tmp_path / "early", lambda results: list(reversed(results)))
    on_disk = set(raw_files(tmp_path / "early"))
    bundled = {item["file"].removeprefix("raw/") for item in early.manifest["items"] if item["file"]}
    assert on_disk == bundled


def test_nothing_is_scrubbed_early_when_categories_are_excluded(collected: Collected, tmp_path) -> None:
    builder = BundleBuilder(collected.staging, tmp_path / "out", redactor=Redactor(RedactionOptions()),
                            exclude={"processes"})
    for result in collected.report.results:
        builder.scrub_early(result)
    assert not (tmp_path / "out").exists()
    result = builder.finish(collected.report)
    assert not any(item["category"] == "processes" for item in result.manifest["items"])


def test_a_bundle_directory_in_use_is_never_scrubbed_into(collected: Collected, tmp_path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("not the bundle's\n")
    builder = BundleBuilder(collected.staging, busy, redactor=Redactor(RedactionOptions()))
    for result in collected.report.results:
        builder.scrub_early(result)
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]
    with pytest.raises(InvalidInputError, match="not empty"):
        builder.finish(collected.report)


class Quick(Collector):
    name = category = "quick"
    description = "Writes one file at once."
    platforms = ALL_PLATFORMS

    def collect(self, ctx) -> dict:
        ctx.write_text("quick/note.txt", "password=Hunter2Hunter2\n")
        return {"done": True}


class Slow(Collector):
    name = category = "slow"
    description = "Ends once the test has seen the quick collector's result."
    platforms = ALL_PLATFORMS

    def __init__(self) -> None:
        self.release = threading.Event()

    def collect(self, ctx) -> dict:
        self.release.wait(30)
        ctx.write_text("slow/note.txt", "all fine\n")
        return {"done": True}


def test_collect_hands_each_finished_collector_to_on_result_while_others_run(tmp_path) -> None:
    slow = Slow()
    seen: list[tuple[str, bool]] = []

    def on_result(result) -> None:
        seen.append((result.name, slow.release.is_set()))
        slow.release.set()

    report = collect(CollectOptions(deadline=60), tmp_path / "staging", collectors=[Quick(), slow], on_result=on_result)
    assert seen == [("quick", False), ("slow", True)]
    assert all(result.status is CollectorStatus.OK for result in report.results)


def test_a_share_built_while_collecting_keeps_no_planted_secret(tmp_path) -> None:
    slow = Slow()
    redactor = Redactor(RedactionOptions())
    builder = BundleBuilder(tmp_path / "staging", tmp_path / "out", redactor=redactor)

    def on_result(result) -> None:
        builder.scrub_early(result)
        slow.release.set()

    report = collect(CollectOptions(deadline=60), tmp_path / "staging", collectors=[Quick(), slow],
                     redactor=redactor, on_result=on_result)
    result = builder.finish(report)
    assert "Hunter2Hunter2" not in all_bytes(tmp_path / "out").decode()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {item["path"] for item in manifest["items"]} >= {"quick/note.txt", "slow/note.txt"}
    assert result.manifest["build_seconds"] >= 0
