"""build_bundle() on a real collection of this PC: nothing planted leaks, every item is accounted
for, the documents are complete and the report page is self-contained."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from html.parser import HTMLParser
from pathlib import Path

import pytest

from protocol.archive import inspect_archive, pack
from protocol.manifest import parse_manifest
from agent.bundle import build_bundle
from agent.diagnostics.model import ItemStatus
from agent.bundle.summary import SUMMARY_KEYS
from agent.redaction import Finding, RedactionOptions, Redactor
from protocol.errors import HelplineError, InvalidInputError
from tests.agent.bundle.conftest import FRAGMENTS, SECRETS, Collected, all_bytes

EXCLUDED = "processes"


@pytest.fixture(scope="module")
def bundle(collected: Collected, tmp_path_factory):
    """One bundle of the shared collection, with the user's own words and one category excluded."""
    out = tmp_path_factory.mktemp("bundle") / "out"
    extra = {"ticket": "T-1042", "what_happened": "Outlook hangs since Monday",
             "tried": "restarted; the log says password=CorrectHorseBatteryStaple"}
    result = build_bundle(collected.report, collected.staging, out, redactor=Redactor(RedactionOptions()),
                          exclude={EXCLUDED}, extra=extra)
    return result


def test_no_planted_secret_reaches_the_bundle_or_its_archive(bundle, tmp_path):
    everything = all_bytes(bundle.out_dir)
    for secret in SECRETS + FRAGMENTS:
        assert secret.encode() not in everything, f"{secret} leaked into the bundle"
    size, digest = pack(bundle.out_dir, tmp_path / "bundle.tar.gz")
    archive = (tmp_path / "bundle.tar.gz").read_bytes()
    assert len(archive) == size and hashlib.sha256(archive).hexdigest() == digest
    unpacked = gzip.decompress(archive)
    for secret in SECRETS + FRAGMENTS:
        assert secret.encode() not in unpacked, f"{secret} leaked into the archive"
    # ...and the redaction did happen where the secrets were, rather than the files going missing.
    log_item = next(i for i in bundle.manifest["items"] if i["path"].endswith("/app.log"))
    assert log_item["redaction"]["status"] == "scrubbed" and log_item["redaction"]["counts"]
    env_text = (bundle.out_dir / "raw/environment/variables.txt").read_text()
    assert "HTTPS_PROXY=" in env_text and "[REDACTED:" in env_text


def test_the_manifest_lists_every_item_with_a_matching_hash(bundle, collected: Collected):
    manifest = bundle.manifest
    assert manifest["schema_version"] == 1
    on_disk = json.loads((bundle.out_dir / "manifest.json").read_text())
    assert on_disk["items"] == manifest["items"]
    expected = {item.path for item in collected.report.items if item.category != EXCLUDED}
    listed = {item["path"] for item in manifest["items"] if item["listed"]}
    assert listed == expected
    bundled = [item for item in manifest["items"] if item["file"]]
    assert bundled, "nothing was bundled"
    for item in bundled:
        data = (bundle.out_dir / item["file"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(data).hexdigest(), item["path"]
        assert item["size"] == len(data)
        assert item["redaction"]["status"] == "scrubbed"
    for item in manifest["items"]:
        if not item["file"]:
            assert not (bundle.out_dir / "raw" / item["path"]).exists(), item["path"]
    files = sorted(p.relative_to(bundle.out_dir).as_posix() for p in (bundle.out_dir / "raw").rglob("*")
                   if p.is_file())
    assert files == sorted(item["file"] for item in bundled), "a file in raw/ is not in the manifest"
    assert manifest["totals"]["files"] == len(bundled)
    assert manifest["totals"]["bytes"] == sum(item["size"] for item in bundled)
    for name in ("summary.json", "report.html"):
        data = (bundle.out_dir / name).read_bytes()
        assert manifest["documents"][name] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["extra"]["ticket"] == "T-1042"
    assert "[REDACTED:password]" in manifest["extra"]["tried"]
    assert manifest["collection"]["deadline"] == 20
    assert {c["name"]: c["status"] for c in manifest["collectors"]}[EXCLUDED] == "excluded"


def test_items_without_a_file_are_listed_with_their_status(bundle, collected: Collected):
    without = [i for i in collected.report.items
               if i.status in (ItemStatus.NOT_FOUND, ItemStatus.SKIPPED, ItemStatus.DENIED) and i.category != EXCLUDED]
    by_path = {item["path"]: item for item in bundle.manifest["items"]}
    for item in without:
        record = by_path[item.path]
        assert record["status"] == item.status.value and record["file"] is None
        assert record["redaction"]["status"] == "no_file"


def test_a_stray_staging_file_is_named_but_never_bundled(bundle):
    stray = [item for item in bundle.manifest["items"] if not item["listed"]]
    assert [item["path"] for item in stray] == ["logs/stray-notes.txt"]
    assert stray[0]["redaction"]["status"] == "not_scrubbed"
    assert "not listed" in stray[0]["redaction"]["reason"]
    assert not list(bundle.out_dir.rglob("stray-notes.txt"))
    preview = {p.category: p for p in bundle.preview}
    assert preview["logs"].dropped == 1


def test_the_excluded_category_is_absent(bundle):
    assert bundle.manifest["excluded"] == [EXCLUDED]
    assert not (bundle.out_dir / "raw" / EXCLUDED).exists()
    assert all(item["category"] != EXCLUDED for item in bundle.manifest["items"])
    assert bundle.summary["processes"] is None
    assert EXCLUDED not in {p.category for p in bundle.preview}


def test_the_summary_has_the_triage_keys(bundle):
    summary = json.loads((bundle.out_dir / "summary.json").read_text())
    assert summary == bundle.summary
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["os"]["family"] == "linux" and summary["os"]["kernel"]
    assert summary["hardware"]["memory_total"] > 0 and summary["hardware"]["cores"] >= 1
    assert summary["disks"] and {"mount", "fs", "size", "used_percent"} <= set(summary["disks"][0])
    assert isinstance(summary["disk_full"], list)
    assert summary["software"]["package_count"] == len(
        json.loads((bundle.out_dir / "raw/software/packages.json").read_text())["packages"])
    messages = [entry["message"] for entry in summary["errors"]["top"]]
    assert any("login failed" in m and "[REDACTED:password]" in m for m in messages), messages
    assert any("[REDACTED:github-token]" in m for m in messages), messages
    proxies = summary["network"]["proxies"]
    assert any("[REDACTED:url-password]" in p["value"] and p["value"].endswith("@proxy:3128") for p in proxies), \
        proxies
    assert summary["collection"]["collectors"][EXCLUDED] == "excluded"


class _PageChecker(HTMLParser):
    """Collects every tag, link and source of a page and checks that tags nest properly."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "src", "action", "srcset", "data"):
                self.links.append(value or "")
            if name.startswith("on"):
                self.errors.append(f"event handler {name}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_the_report_page_is_self_contained_and_well_formed(bundle):
    page = (bundle.out_dir / "report.html").read_text()
    checker = _PageChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert "script" not in checker.tags and "iframe" not in checker.tags
    assert "url(" not in page and "@import" not in page
    for link in checker.links:
        assert link.startswith("#") or link.startswith("raw/"), link
        if link.startswith("raw/"):
            assert (bundle.out_dir / link).is_file(), link
    text = " ".join(checker.text)
    hostname = bundle.manifest["hostname"]
    assert hostname == socket.gethostname()
    assert hostname in text and "T-1042" in text
    for item in bundle.manifest["items"]:
        assert item["path"] in text, item["path"]
        if item["file"]:
            assert item["file"] in checker.links


def test_the_preview_adds_up_to_the_manifest(bundle):
    preview = bundle.preview
    assert sum(p.files for p in preview) == bundle.manifest["totals"]["files"]
    assert sum(p.bytes for p in preview) == bundle.manifest["totals"]["bytes"]
    assert sum(p.redactions for p in preview) == sum(c["count"] for c in bundle.manifest["totals"]["redactions"])
    assert bundle.total_bytes > bundle.manifest["totals"]["bytes"]


def test_hostnames_are_pseudonymised_when_asked(collected: Collected, tmp_path):
    hostname = socket.gethostname()
    redactor = Redactor(RedactionOptions(hostnames=True, known_hostnames=(hostname,)))
    result = build_bundle(collected.report, collected.staging, tmp_path / "out", redactor=redactor,
                          exclude={"processes", "software"})
    assert result.manifest["hostname"].startswith("host-")
    assert result.summary["hostname"] == result.manifest["hostname"]
    assert f"Diagnostics of {hostname}<" not in (tmp_path / "out/report.html").read_text()
    assert f'"hostname": "{hostname}"' not in (tmp_path / "out/raw/system/facts.json").read_text()
    assert '"hostname": "host-' in (tmp_path / "out/raw/system/facts.json").read_text()


class _FlaggingRedactor(Redactor):
    """A real redactor whose final check also reports ``flag`` (a bundle path) as holding a password.

    With ``marker``, only while the file contains that text.
    """

    def __init__(self, flag: str, marker: str | None = None):
        super().__init__(RedactionOptions())
        self.flag, self.marker = flag, marker

    def verify_tree(self, root: Path) -> list[Finding]:
        findings = super().verify_tree(root)
        path = Path(root) / self.flag
        if path.is_file() and (self.marker is None or self.marker in path.read_text()):
            findings.append(Finding(self.flag, 3, "password"))
        return findings


def test_a_file_verification_flags_is_removed_and_the_manifest_says_why(collected: Collected, tmp_path):
    redactor = _FlaggingRedactor("raw/system/os-release.txt")
    result = build_bundle(collected.report, collected.staging, tmp_path / "out", redactor=redactor,
                          exclude={"processes"})
    assert not (tmp_path / "out/raw/system/os-release.txt").exists()
    record = next(item for item in result.manifest["items"] if item["path"] == "system/os-release.txt")
    assert record["file"] is None and record["sha256"] is None
    assert record["redaction"]["status"] == "dropped"
    assert record["redaction"]["reason"] == "verification found password"
    assert result.manifest["verification"]["dropped"] == [
        {"path": "system/os-release.txt", "reason": "verification found password"}]
    on_disk = json.loads((tmp_path / "out/manifest.json").read_text())
    assert on_disk["verification"] == result.manifest["verification"]
    assert "verification found password" in (tmp_path / "out/report.html").read_text()
    assert next(p for p in result.preview if p.category == "system").dropped == 1


def test_a_flagged_document_refuses_the_whole_bundle(collected: Collected, tmp_path):
    redactor = _FlaggingRedactor("summary.json")
    with pytest.raises(HelplineError, match="summary.json still contains password"):
        build_bundle(collected.report, collected.staging, tmp_path / "out", redactor=redactor)
    assert not any((tmp_path / "out" / name).exists() for name in ("manifest.json", "summary.json", "report.html"))


def test_a_flagged_report_page_is_replaced_by_a_plain_one(collected: Collected, tmp_path):
    redactor = _FlaggingRedactor("report.html", marker="Diagnostics of")  # the full page only
    result = build_bundle(collected.report, collected.staging, tmp_path / "out", redactor=redactor,
                          exclude={"processes"})
    assert result.manifest["verification"]["report_html"] == (
        "replaced by a plain page: the final check found password")
    page = (tmp_path / "out/report.html").read_text()
    assert "left out by the final check" in page and "Diagnostics of" not in page
    assert json.loads((tmp_path / "out/manifest.json").read_text())["documents"]["report.html"]["size"] == len(page)


def test_an_archive_of_the_bundle_passes_inspection(bundle, tmp_path):
    pack(bundle.out_dir, tmp_path / "b.tar.gz")
    listing = inspect_archive(tmp_path / "b.tar.gz")
    assert set(listing.names()) >= {"manifest.json", "summary.json", "report.html"}
    assert json.loads(listing.read_member("manifest.json", 1 << 24))["items"] == bundle.manifest["items"]


def test_bad_arguments_are_refused(collected: Collected, tmp_path):
    redactor = Redactor(RedactionOptions())
    with pytest.raises(InvalidInputError, match="unknown diagnostics categories"):
        build_bundle(collected.report, collected.staging, tmp_path / "a", redactor=redactor, exclude={"bogus"})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(InvalidInputError, match="not empty"):
        build_bundle(collected.report, collected.staging, busy, redactor=redactor)
    with pytest.raises(InvalidInputError, match="contain each other"):
        build_bundle(collected.report, collected.staging, collected.staging / "out", redactor=redactor)
    with pytest.raises(InvalidInputError, match="not plain JSON"):
        build_bundle(collected.report, collected.staging, tmp_path / "b", redactor=redactor, extra={"x": object()})


def _is_the_model_s_own_form(out_dir: Path) -> dict:
    """manifest.json as the agent wrote it is exactly what the readers' model makes of it: every field valid,
    none missing or extra, in the model's order and form (the agent writes it without the model)."""
    text = (out_dir / "manifest.json").read_text(encoding="utf-8")
    assert parse_manifest(text.encode("utf-8")).to_json() == text
    return json.loads(text)


def test_the_written_manifest_is_what_readers_validate_it_as(bundle, collected: Collected, tmp_path):
    written = _is_the_model_s_own_form(bundle.out_dir)
    assert written == bundle.manifest and written["excluded"] == [EXCLUDED] and written["extra"]["ticket"] == "T-1042"
    assert set(written["verification"]) >= {"files_checked", "kinds_checked", "withheld_lines"}
    # A dropped file, and the plain page in place of the report: the rarer shapes of the same document.
    dropped = build_bundle(collected.report, collected.staging, tmp_path / "dropped",
                           redactor=_FlaggingRedactor("raw/system/os-release.txt"))
    assert _is_the_model_s_own_form(tmp_path / "dropped")["verification"]["dropped"] == \
        dropped.manifest["verification"]["dropped"] != []
    build_bundle(collected.report, collected.staging, tmp_path / "plain",
                 redactor=_FlaggingRedactor("report.html", marker="Diagnostics of"))
    assert _is_the_model_s_own_form(tmp_path / "plain")["verification"]["report_html"].startswith("replaced")


def test_sharing_does_not_load_the_model_library(tmp_path):
    """The share path (collect, redact, bundle, pack) runs without pydantic: its import alone was a tenth
    of a share's time. Checked in a fresh interpreter, where nothing was imported before."""
    import subprocess
    import sys

    code = ("import sys; import agent.share, agent.bundle.build, agent.bundle.final_check, agent.diagnostics.collect; "
            "from agent.diagnostics.collectors import collector_names; collector_names(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
