"""The report's own words are redacted again only when redacting them taught the pseudonym map a name."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.bundle import build, build_bundle
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus, Item, ItemKind, ItemStatus
from agent.redaction import RedactionOptions, Redactor

NOW = datetime(2024, 3, 14, 9, 0, tzinfo=timezone.utc)


def _report(staging: Path, facts_by_category: dict[str, dict]) -> CollectionReport:
    results = []
    for category, facts in facts_by_category.items():
        path = f"{category}/notes.txt"
        (staging / category).mkdir(parents=True, exist_ok=True)
        (staging / path).write_text("nothing to see here\n")
        item = Item(path, category, f"/var/log/{category}.txt", ItemKind.LOG, ItemStatus.OK, 0.01, 20)
        results.append(CollectorResult(category, category, CollectorStatus.OK, 0.1, [item], facts))
    return CollectionReport(NOW, NOW, "linux", 20.0, results)


@pytest.fixture
def passes(monkeypatch) -> list[int]:
    """Counts the passes over the report's words that one bundle makes."""
    calls: list[int] = []
    real = build.redact_metadata

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "redact_metadata", counted)
    return calls


def test_words_that_teach_the_map_nothing_are_redacted_once(tmp_path, passes) -> None:
    report = _report(tmp_path / "staging", {"system": {"os": "Debian 12"}, "logs": {"count": 1}})
    result = build_bundle(report, tmp_path / "staging", tmp_path / "out", redactor=Redactor(RedactionOptions()),
                          extra={"answers": {"what_happened": "slow"}})
    assert len(passes) == 1
    assert result.manifest["extra"]["answers"] == {"what_happened": "slow"}


def test_a_name_learned_in_a_later_field_goes_from_the_earlier_ones(tmp_path, passes) -> None:
    # The first collector's words name "quillon" alone (not yet known as a user name); the second's path teaches it.
    report = _report(tmp_path / "staging", {"system": {"owner": "quillon"},
                                             "logs": {"file": "/home/quillon/app.log"}})
    redactor = Redactor(RedactionOptions(usernames=True))
    result = build_bundle(report, tmp_path / "staging", tmp_path / "out", redactor=redactor)
    assert len(passes) == 2
    assert "quillon" not in json.dumps(result.manifest)
    assert "quillon" not in (tmp_path / "out" / "summary.json").read_text()
    assert "quillon" not in (tmp_path / "out" / "report.html").read_text()
