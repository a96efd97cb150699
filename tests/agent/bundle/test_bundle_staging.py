"""build_bundle() on hand-made staging directories: unsafe report paths, links leading out of
staging, binary files, special files and a failing redactor are all named and never bundled."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.bundle import build_bundle
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus, Item, ItemKind, ItemStatus
from agent.redaction import RedactionOptions, Redactor
from tests.agent.bundle.conftest import all_bytes

NOW = datetime(2024, 3, 14, 9, 0, tzinfo=timezone.utc)
OUTSIDE_SECRET = "OutsideStagingValue"


def item(path: str, status: ItemStatus = ItemStatus.OK) -> Item:
    return Item(path, path.split("/")[0], f"/var/log/{path.rsplit('/', 1)[-1]}", ItemKind.LOG, status, 0.01, 10)


def report_of(*items: Item, facts: dict | None = None) -> CollectionReport:
    by_category: dict[str, list[Item]] = {}
    for entry in items:
        by_category.setdefault(entry.category, []).append(entry)
    results = [CollectorResult(category, category, CollectorStatus.OK, 0.1, entries,
                               (facts or {}).get(category, {"count": len(entries)}))
               for category, entries in by_category.items()]
    return CollectionReport(NOW, NOW, "linux", 20.0, results)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside staging holding a secret, as a link target."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "app.log").write_text(f"password={OUTSIDE_SECRET}\n")
    return folder


def records(result) -> dict[str, dict]:
    return {record["path"]: record for record in result.manifest["items"]}


def test_paths_that_leave_staging_are_never_read(tmp_path, outside):
    staging = tmp_path / "stage"
    (staging / "logs").mkdir(parents=True)
    (staging / "logs/ok.log").write_text("fine\n")
    (staging / "logs/linked.log").symlink_to(outside / "app.log")
    (staging / "crashes").symlink_to(outside, target_is_directory=True)
    report = report_of(item("logs/ok.log"), item("logs/linked.log"), item("logs/../../outside/app.log"),
                       item("crashes/app.log"))
    result = build_bundle(report, staging, tmp_path / "out", redactor=Redactor(RedactionOptions()))
    got = records(result)
    assert got["logs/ok.log"]["redaction"]["status"] == "scrubbed"
    assert got["logs/linked.log"]["redaction"]["status"] == "dropped"
    assert "link" in got["logs/linked.log"]["redaction"]["reason"]
    unsafe = next(r for r in result.manifest["items"] if "outside" in r["path"] and r["category"] == "logs")
    assert unsafe["redaction"]["reason"] == "unsafe path in the collection report; never read"
    assert got["crashes/app.log"]["redaction"]["reason"] == "its folder leads outside the staging directory; never read"
    assert OUTSIDE_SECRET.encode() not in all_bytes(tmp_path / "out")
    unlisted = [r for r in result.manifest["items"] if not r["listed"]]
    assert [r["path"] for r in unlisted] == ["crashes"]  # the linked folder itself is named
    assert "symbolic link" in unlisted[0]["redaction"]["reason"]


def test_binary_special_and_unlisted_files_are_named_not_bundled(tmp_path):
    staging = tmp_path / "stage"
    (staging / "logs").mkdir(parents=True)
    (staging / "logs/core.bin").write_bytes(b"\x7fELF\x00\x00secret=" + OUTSIDE_SECRET.encode())
    os.mkfifo(staging / "logs/pipe")
    (staging / "logs/extra.txt").write_text(f"token={OUTSIDE_SECRET}\n")
    (staging / "stray-at-top.txt").write_text("x\n")
    report = report_of(item("logs/core.bin"), item("logs/missing.log", ItemStatus.NOT_FOUND),
                       item("logs/vanished.log"))
    result = build_bundle(report, staging, tmp_path / "out", redactor=Redactor(RedactionOptions()))
    got = records(result)
    assert got["logs/core.bin"]["redaction"]["status"] == "dropped"
    assert got["logs/core.bin"]["redaction"]["reason"].startswith("not text")
    assert got["logs/missing.log"]["redaction"]["status"] == "no_file"
    assert got["logs/vanished.log"]["redaction"]["status"] == "not_scrubbed"  # listed OK, but gone
    assert got["logs/pipe"]["listed"] is False and "special file" in got["logs/pipe"]["redaction"]["reason"]
    assert got["logs/extra.txt"]["redaction"]["status"] == "not_scrubbed"
    assert got["stray-at-top.txt"]["category"] == "unknown"
    assert OUTSIDE_SECRET.encode() not in all_bytes(tmp_path / "out")
    assert result.manifest["totals"]["files"] == 0 and result.manifest["totals"]["left_out"] == 5


class _BrokenRedactor(Redactor):
    """Raises while scrubbing one file, as a bug in a detector would."""

    def redact_file(self, src, dst, relpath=None):
        if Path(src).name == "bad.log":
            Path(dst).write_text("half-written, unscrubbed")
            raise RuntimeError("detector crashed")
        return super().redact_file(src, dst, relpath)


def test_a_redactor_crash_drops_the_file(tmp_path):
    staging = tmp_path / "stage"
    (staging / "logs").mkdir(parents=True)
    (staging / "logs/bad.log").write_text("x\n")
    (staging / "logs/good.log").write_text("y\n")
    result = build_bundle(report_of(item("logs/bad.log"), item("logs/good.log")), staging, tmp_path / "out",
                          redactor=_BrokenRedactor(RedactionOptions()))
    got = records(result)
    assert got["logs/bad.log"]["redaction"] == {"status": "dropped", "counts": [],
                                                "reason": "scrubbing failed (RuntimeError)"}
    assert not (tmp_path / "out/raw/logs/bad.log").exists()
    assert (tmp_path / "out/raw/logs/good.log").read_text() == "y\n"


def test_user_names_in_paths_are_pseudonymised_and_files_follow(tmp_path):
    staging = tmp_path / "stage"
    (staging / "logs/files/home/anna").mkdir(parents=True)
    (staging / "logs/files/home/anna/app.log").write_text("started by anna\n")
    redactor = Redactor(RedactionOptions(usernames=True, known_usernames=("anna",)))
    listed = Item("logs/files/home/anna/app.log", "logs", "/home/anna/app.log", ItemKind.LOG, ItemStatus.TRUNCATED,
                  note="kept the last lines of /home/anna/app.log")
    result = build_bundle(report_of(listed), staging, tmp_path / "out", redactor=redactor, exclude={"crashes"})
    [record] = result.manifest["items"]
    assert record["path"] == "logs/files/home/user-1/app.log" and record["file"]
    assert record["source"] == "/home/user-1/app.log"
    assert record["note"] == "kept the last lines of /home/user-1/app.log"
    assert result.manifest["verification"]["withheld_values"] == 0
    assert (tmp_path / "out" / record["file"]).read_text() == "started by user-1\n"
    assert b"anna" not in all_bytes(tmp_path / "out")
