"""The final check stands on its own: with a first pass that misses everything, its second look still
keeps secrets out of the raw files, summary.json, the report and the top-error examples, withholding
lines rather than files, and it says what it checked instead of promising anything."""

from __future__ import annotations

import json

import pytest

from agent.bundle import build_bundle
from agent.bundle.final_check import WITHHELD_LINE
from agent.diagnostics import CollectOptions, collect
from agent.redaction import RedactionOptions, Redactor
from agent.redaction.detectors import Pipeline
from agent.redaction.second_look import KINDS
from tests.agent.bundle.conftest import all_bytes
from tests.agent.bundle.test_bundle_staging import item, records, report_of

#: Secrets in spellings and classes a detector could miss; every one must stay out of the bundle.
MISSED = {
    "german": ("Mein Kennwort ist {}", "Kq7!pZ2wXr9"),
    "french": ("mot de passe : {}", "Lm4$eR8tQw2"),
    "russian": ("пароль: {}", "Пр7вЕт!42зЯ"),
    "flag": ("mysql -uapp -p{} appdb", "Vb8#nM3kLq1"),
    "pgpass": ("db.internal:5432:app:alice:{}", "Hy6tRe3WqZ8x"),
    "url": ("fetch https://bob:{}@files.internal/x failed", "p#ss9Word!x"),
    "openai": ("OPENAI={}", "sk-proj-T3stK3yAbCdEfGhIjKlMnOpQrStUv"),
    "entropy": ("auth token {}", "q8Wez7RtY3uIo9pAs2Df"),
}


class BlindRedactor(Redactor):
    """A first pass that knows no secret at all: whatever is caught is the second look's doing."""

    def __init__(self) -> None:
        super().__init__(RedactionOptions())
        self._pipeline = Pipeline((), self.pseudonyms)

    def _make_pipeline(self, pseudonyms):
        return Pipeline((), pseudonyms)


def _secret_lines() -> list[str]:
    return [template.format(secret) for template, secret in MISSED.values()]


def test_the_second_look_withholds_lines_not_files(tmp_path):
    staging = tmp_path / "stage"
    (staging / "logs").mkdir(parents=True)
    lines = ["service started", *_secret_lines(), "service stopped"]
    (staging / "logs/app.log").write_text("\r\n".join(lines) + "\r\n")
    result = build_bundle(report_of(item("logs/app.log")), staging, tmp_path / "out", redactor=BlindRedactor())
    record = records(result)["logs/app.log"]
    assert record["redaction"]["status"] == "scrubbed"  # kept, not dropped
    written = (tmp_path / "out" / record["file"]).read_bytes().decode()
    assert written.split("\r\n") == ["service started", *[WITHHELD_LINE] * len(MISSED), "service stopped", ""]
    assert "withheld 8 line(s)" in record["redaction"]["reason"]
    verification = result.manifest["verification"]
    assert verification["withheld_lines"] == len(MISSED) and verification["dropped"] == []
    assert verification["files_checked"] == 4 and verification["kinds_checked"] == len(KINDS)
    for _, secret in MISSED.values():
        assert secret.encode() not in all_bytes(tmp_path / "out")


def test_a_json_file_keeps_its_shape_when_a_value_is_withheld(tmp_path):
    staging = tmp_path / "stage"
    (staging / "network").mkdir(parents=True)
    document = {"interface": "wlan0", "note": f"Passwort: {MISSED['german'][1]}", "mtu": 1500}
    (staging / "network/wifi.json").write_text(json.dumps(document, indent=2, ensure_ascii=False))
    result = build_bundle(report_of(item("network/wifi.json")), staging, tmp_path / "out", redactor=BlindRedactor())
    record = records(result)["network/wifi.json"]
    kept = json.loads((tmp_path / "out" / record["file"]).read_text())
    assert kept == {"interface": "wlan0", "note": WITHHELD_LINE, "mtu": 1500}


@pytest.mark.parametrize("redactor_class", [BlindRedactor, Redactor])
def test_secrets_in_top_errors_reach_neither_summary_nor_report(tmp_path, redactor_class):
    # Each secret sits in an error line repeated often enough to be a top error with an example.
    log = tmp_path / "app.log"
    log.write_text("".join(f"2024-05-01T10:00:{n:02d}Z app[12]: ERROR {line}\n"
                           for n, line in enumerate(_secret_lines() * 3)))
    redactor = redactor_class()
    staging = tmp_path / "stage"
    report = collect(CollectOptions(log_globs=[str(log)], deadline=20, categories={"logs"}), staging, redactor=redactor)
    top = next(r.facts for r in report.results if r.category == "logs")["top_errors"]
    assert len(top) >= len(MISSED)
    result = build_bundle(report, staging, tmp_path / "out", redactor=redactor)
    everything = all_bytes(tmp_path / "out")
    for _, secret in MISSED.values():
        assert secret.encode() not in everything
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert all(entry["example"] for entry in summary["errors"]["top"])
    page = (tmp_path / "out/report.html").read_text()
    assert "nothing sensitive" not in page and "Final check: checked" in page
    assert result.manifest["verification"]["kinds_checked"] >= len(KINDS)
