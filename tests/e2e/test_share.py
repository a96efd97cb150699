"""`helpline share` for real: collect on this machine, redact, bundle, upload to the live
server, and the engineer's side (`diag get`, `diag show`, `diag diff`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.archive import inspect_archive
from protocol.errors import ExitStatus
from tests.support.live import helpline_bin

pytestmark = pytest.mark.e2e

# Planted where a careless tool would pick them up: an allow-listed proxy variable and an app log.
PROXY_PASSWORD = "Hunter2ProxyPass"
LOG_SECRETS = {
    "password": "Sup3rSecretDbPass",
    "aws": "AKIAIOSFODNN7QWERTY12",
    "github": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    # In error lines, so that they become top errors with an example line.
    "kennwort": "Qz8!vKp2Lm4x",
    "pgpass": "Ty7wQ2mZx9Rb",
}
ANSWERS = ["--what", "Outlook crashes on start", "--since", "this morning, every time", "--tried", "rebooted twice"]


def plant_logs(tmp_path: Path) -> str:
    logs = tmp_path / "app-logs"
    logs.mkdir()
    (logs / "app.log").write_text(
        "2026-11-22 09:00:01 INFO starting MyApp 4.2.1\n"
        f"2026-11-22 09:00:02 DEBUG connecting with password={LOG_SECRETS['password']}\n"
        f"2026-11-22 09:00:03 DEBUG aws_access_key_id = {LOG_SECRETS['aws']}\n"
        f"2026-11-22 09:00:04 DEBUG token {LOG_SECRETS['github']}\n"
        f"2026-11-22 09:00:05 DEBUG Authorization: Bearer {LOG_SECRETS['bearer']}\n"
        "2026-11-22 09:00:06 ERROR MyApp crashed: segmentation fault in libmail.so.3\n"
        + "".join(f"2026-11-22 09:00:1{n} ERROR sync failed, Kennwort ist {LOG_SECRETS['kennwort']}\n"
                  f"2026-11-22 09:00:2{n} ERROR cannot read db.internal:5432:mail:app:{LOG_SECRETS['pgpass']}\n"
                  for n in range(3))
    )
    return str(logs / "*.log")


def secret_env() -> dict[str, str]:
    return {"HTTPS_PROXY": f"http://alice:{PROXY_PASSWORD}@proxy.example.com:3128"}


def all_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def ticket_with_code(admin_pc) -> tuple[str, str]:
    number = admin_pc.ok("ticket", "create", "Mail client broken", "--json").json()["number"]
    return number, admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]


def test_share_with_a_code_delivers_a_clean_bundle(live_server, admin_pc, make_pc, tmp_path):
    number, code = ticket_with_code(admin_pc)
    user = make_pc("user")
    result = user.ok("share", "--code", code, "--server", live_server.url, "--yes", *ANSWERS,
                     "--logs", plant_logs(tmp_path), env=secret_env())
    assert re.search(rf"Ticket {number} — your diagnostics were delivered\. An engineer will answer by .+ \(within 4 h\)\.", result.stdout), result.stdout
    assert "What will be sent" in result.stdout

    shown = admin_pc.ok("ticket", "show", number, "--json").json()
    assert len(shown["bundles"]) == 1 and shown["timeline"][-1]["kind"] == "bundle"
    dest = tmp_path / "got"
    got = admin_pc.ok("diag", "get", number, "--dir", str(dest), "--json").json()
    assert got["bundle"]["id"] == shown["bundles"][0]["id"]

    manifest = json.loads((dest / "manifest.json").read_text())
    summary = json.loads((dest / "summary.json").read_text())
    assert manifest["schema_version"] == 1
    statuses = {item["status"] for item in manifest["items"]}
    assert statuses <= {"ok", "timeout", "truncated", "not_found", "denied", "error", "skipped"}
    categories = {item["category"] for item in manifest["items"]}
    assert {"system", "hardware", "network", "processes", "software", "logs", "environment"} <= categories
    for item in manifest["items"]:
        if (dest / "raw" / item["path"]).exists():
            assert item["sha256"] and item["redaction"]["status"] in ("scrubbed", "dropped", "not_scrubbed")
    assert summary["os"]["name"] and summary["hardware"]
    assert "Outlook crashes on start" in json.dumps(manifest)
    report = (dest / "report.html").read_text()
    assert "<html" in report.lower() and number in report or "Outlook" in report or summary["os"]["name"] in report

    text = all_text(dest)
    assert PROXY_PASSWORD not in text
    for secret in LOG_SECRETS.values():
        assert secret not in text
    assert "MyApp crashed: segmentation fault" in text  # the useful line survives redaction
    assert any("sync failed" in entry["message"] and entry["example"] for entry in summary["errors"]["top"])
    assert "nothing sensitive" not in report and "Final check: checked" in report
    assert "4.2.1" in text

    brief = admin_pc.ok("diag", "show", number).stdout
    assert number in brief and "OS:" in brief


def test_share_opens_a_self_service_ticket(server_factory, make_pc):
    server = server_factory(self_service="anyone")
    user = make_pc("user")
    out = user.ok("share", "--server", server.url, "--yes", *ANSWERS, "--exclude", "processes").stdout
    match = re.search(r"Ticket (T-\d+) — your diagnostics were delivered\. An engineer will answer by", out)
    assert match, out
    admin = make_pc("admin")
    admin.login(server)
    shown = admin.ok("ticket", "show", match.group(1), "--json").json()
    assert shown["title"] == "Outlook crashes on start" and "rebooted twice" in shown["description"]
    dest = admin.ok("diag", "get", match.group(1), "--dir", str(server.data_dir.parent / "got"), "--json").json()["dir"]
    manifest = json.loads((Path(dest) / "manifest.json").read_text())
    assert "processes" in manifest["excluded"]
    assert not any(item["category"] == "processes" for item in manifest["items"])


def test_share_to_a_file_needs_no_server_nor_its_client(make_pc, tmp_path):
    # A share to a file talks to no server: it loads neither the HTTP client nor the signing code (-X importtime).
    target = tmp_path / "out" / "diag.tar.gz"
    pc = make_pc("offline")
    done = subprocess.run([sys.executable, "-X", "importtime", helpline_bin(), "share", "--yes", "--output", str(target),
                           *ANSWERS], capture_output=True, text=True, env={**pc.env(), **secret_env()}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Saved to" in done.stdout and target.exists()
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "agent.redaction" in loaded and "agent.bundle.build" in loaded
    assert not loaded & {"httpx", "cryptography", "agent.client", "agent.upload", "agent.link"}
    listing = inspect_archive(target)
    assert {"manifest.json", "summary.json", "report.html"} <= {m.name for m in listing.members}


def test_preview_sends_nothing(live_server, admin_pc, make_pc):
    number, code = ticket_with_code(admin_pc)
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    out = user.ok("share", "--ticket", "#" + number.removeprefix("T-"), "--preview", *ANSWERS).stdout
    assert "Nothing was sent" in out
    bundle_dir = Path(re.search(r"The bundle is in (\S+)", out).group(1))
    assert f"Ticket: <b>{number}</b>" in (bundle_dir / "report.html").read_text()  # known before sending
    assert admin_pc.ok("ticket", "show", number, "--json").json()["bundles"] == []


def test_no_terminal_and_no_yes_refuses(make_pc):
    result = make_pc("user").run("share", *ANSWERS)
    assert result.code == ExitStatus.INVALID and "--yes" in result.stderr


def test_unlinked_ticket_is_refused(live_server, admin_pc, make_pc):
    number, code = ticket_with_code(admin_pc)
    other, _ = ticket_with_code(admin_pc)
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    result = user.run("share", "--ticket", other, "--yes", *ANSWERS)
    assert result.code == ExitStatus.CONFIG and f"not linked to {other}" in result.stderr


def test_unreachable_server_queues_then_sends(live_server, admin_pc, make_pc):
    number, code = ticket_with_code(admin_pc)
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    live_server.stop()
    try:
        result = user.run("share", "--ticket", number, "--yes", *ANSWERS)
    finally:
        live_server.start()
    assert result.code == ExitStatus.UNAVAILABLE and "queued" in result.stderr
    out = user.ok("share", "--send-queued").stdout
    assert f"{number}: delivered" in out
    assert len(admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]) == 1


def test_diff_between_two_shares(live_server, admin_pc, make_pc, tmp_path):
    number, code = ticket_with_code(admin_pc)
    user = make_pc("user")
    user.ok("share", "--code", code, "--server", live_server.url, "--yes", *ANSWERS)
    user.ok("share", "--ticket", number, "--yes", *ANSWERS, "--logs", plant_logs(tmp_path))
    bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
    assert len(bundles) == 2
    diff = admin_pc.ok("diag", "diff", bundles[0]["id"], bundles[1]["id"], "--json").json()
    assert isinstance(diff, dict)
    text = admin_pc.ok("diag", "diff", bundles[0]["id"], bundles[1]["id"]).stdout
    assert text.strip()


def test_no_server_known_fails_before_gathering(make_pc):
    pc = make_pc("fresh")
    result = pc.run("share", "--yes", *ANSWERS)
    assert result.code == ExitStatus.CONFIG
    assert "--server URL" in result.stderr and "What will be sent" not in result.stdout
    assert not (pc.agent_dir / "work").exists() or not any((pc.agent_dir / "work").iterdir())


def _browser(tmp_path: Path, works: bool) -> dict[str, str]:
    """A BROWSER for webbrowser: a script that records the page it was asked to open, or one that fails."""
    script = tmp_path / ("browser.sh" if works else "no-browser.sh")
    opened = tmp_path / "opened.txt"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{opened}"\n' if works else "#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    return {"BROWSER": str(script), "DISPLAY": ""}


def test_diag_show_is_enough_to_triage_from(live_server, admin_pc, make_pc, tmp_path):
    number, code = ticket_with_code(admin_pc)
    logs = tmp_path / "app-logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(
        f"2026-11-22 09:00:{n:02d} ERROR HP_LaserJet_4000 job {100 + n} failed: printer not responding\n"
        for n in range(6)))
    make_pc("user").ok("share", "--code", code, "--server", live_server.url, "--yes", *ANSWERS,
                       "--logs", str(logs / "*.log"))
    shown = admin_pc.ok("diag", "show", number).stdout
    # The user's three answers, word for word.
    for label, answer in (("What happened", "Outlook crashes on start"), ("Since when", "this morning, every time"),
                          ("Already tried", "rebooted twice")):
        assert f"{label}: {answer}" in shown, shown
    assert "Needs attention" in shown
    # The top error keeps its printer's name and one real line beside its shape.
    assert re.search(r"6× .*HP_LaserJet_4000 job <n> failed: printer not responding", shown), shown
    assert re.search(r"e\.g\. .*HP_LaserJet_4000 job 10\d failed", shown), shown
    assert re.search(r"Load: (\d+\.\d\d ){2}\d+\.\d\d", shown), shown
    assert re.search(r"Memory: [\d.]+ [KMG]?B of [\d.]+ [KMG]?B used", shown), shown
    assert re.search(r"Disks:\n  /\S*: [\d.]+ [KMG]?B", shown), shown
    assert f"Full report: report.html in the bundle; `helpline diag get {number} --open`" in shown
    # The timeline and the bundle table say the same size, with the same formatter.
    size = re.search(r"files, ([\d.]+ [KMG]?B)\n", shown).group(1)
    timeline = admin_pc.ok("ticket", "show", number, "--json").json()["timeline"][-1]["message"]
    assert f"files, {size})" in timeline, (timeline, size)


def test_diag_get_open_reuses_a_verified_copy_and_names_the_page_without_a_browser(
        live_server, admin_pc, make_pc, tmp_path):
    number, code = ticket_with_code(admin_pc)
    make_pc("user").ok("share", "--code", code, "--server", live_server.url, "--yes", *ANSWERS)
    here = tmp_path / "engineer"
    here.mkdir()
    first = admin_pc.ok("diag", "get", number, "--open", cwd=here, env=_browser(tmp_path, works=True))
    assert "is in" in first.stdout
    [folder] = [p for p in here.iterdir() if p.is_dir()]
    report_uri = (folder / "report.html").resolve().as_uri()
    assert (tmp_path / "opened.txt").read_text().split() == [report_uri]

    again = admin_pc.ok("diag", "get", number, "--open", cwd=here, env=_browser(tmp_path, works=True))
    assert "was already in" in again.stdout and "unchanged since it was downloaded" in again.stdout
    assert (tmp_path / "opened.txt").read_text().split() == [report_uri, report_uri]
    # diag show now points at the local copy.
    assert f"Full report: {folder / 'report.html'}" in admin_pc.ok("diag", "show", number, cwd=here).stdout

    lonely = admin_pc.ok("diag", "get", number, "--open", cwd=here, env=_browser(tmp_path, works=False))
    assert "No browser could be started here; open" in lonely.stdout
    assert str(folder / "report.html") in lonely.stdout.replace("\n", "")

    # A copy changed since it was downloaded is not reused (and not overwritten).
    (folder / "summary.json").write_text("{}")
    changed = admin_pc.run("diag", "get", number, cwd=here)
    assert changed.code != 0 and "already exists" in changed.stderr
