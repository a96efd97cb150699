"""Linux collectors where this PC cannot show the interesting case: systemd services and
coredumps from recorded outputs, package list parsing, syslog filtering, log globs, disks."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.diagnostics.collect import run_collector
from agent.diagnostics.collectors import crashes, logs, services
from agent.diagnostics.collectors.hardware import full_mounts, parse_df_kp
from agent.diagnostics.collectors.logs import (
    ErrorCounter, LogsCollector, line_time, normalise_line, recent_error_lines,
)
from agent.diagnostics.collectors.software import parse_dpkg, parse_rpm
from agent.diagnostics.context import CollectContext, CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemStatus
from agent.redaction import RedactionOptions, Redactor

FIXTURES = Path(__file__).parent / "fixtures"
#: "Now" for the tests of time windows: a fixed time, never today.
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux PC")


def _linux_runner(runner_class, rules):
    return runner_class([(program, needle, f"linux/{name}", code) for program, needle, name, code in rules])


@pytest.fixture
def systemd_runner(windows_runner):
    runner_class = type(windows_runner)
    return _linux_runner(runner_class, [
        ("systemctl", "--failed", "systemctl-failed.txt", 0),
        ("systemctl", "list-unit-files", "systemctl-enabled.txt", 0),
        ("systemctl", "list-units", "systemctl-services.txt", 0),
        ("coredumpctl", "list", "coredumpctl.json", 0),
    ])


def test_systemd_failed_and_enabled_but_not_running(make_ctx, systemd_runner, monkeypatch):
    monkeypatch.setattr(services, "systemd_booted", lambda: True)
    collector = services.ServicesCollector()
    ctx = make_ctx("linux", systemd_runner, category="services", forbidden=collector.forbidden_paths)
    result = run_collector(collector, ctx)
    assert result.status is CollectorStatus.OK, result.error
    facts = result.facts
    assert facts["systemd"] is True
    assert [u["unit"] for u in facts["failed"]] == ["cups.service", "NetworkManager-wait-online.service"]
    # ssh is enabled but dead; the failed ones too; cron runs; the getty@ template is not a service to run.
    assert {u["unit"]: u["active"] for u in facts["enabled_not_running"]} == {
        "cups.service": "failed", "NetworkManager-wait-online.service": "failed", "ssh.service": "inactive"}
    assert facts["service_count"] == 9


def test_without_systemd_services_are_skipped_cleanly(make_ctx, systemd_runner, monkeypatch):
    monkeypatch.setattr(services, "systemd_booted", lambda: False)
    result = run_collector(services.ServicesCollector(), make_ctx("linux", systemd_runner, category="services"))
    assert result.status is CollectorStatus.OK
    assert result.facts["systemd"] is False and result.facts["failed"] is None
    assert {i.status for i in result.items if i.path != "services/facts.json"} == {ItemStatus.SKIPPED}
    assert systemd_runner.calls == [], "systemctl must not run when systemd is not PID 1"


def test_without_systemctl_services_are_not_found(make_ctx, windows_runner):
    # A runner that knows no Linux command: systemctl is absent.
    result = run_collector(services.ServicesCollector(), make_ctx("linux", windows_runner, category="services"))
    assert result.status is CollectorStatus.OK
    assert {i.status for i in result.items if i.path != "services/facts.json"} == {ItemStatus.NOT_FOUND}


def test_coredumps_from_coredumpctl(make_ctx, systemd_runner, monkeypatch):
    monkeypatch.setattr(crashes, "systemd_booted", lambda: True)
    collector = crashes.CrashesCollector()
    result = run_collector(collector, make_ctx("linux", systemd_runner, category="crashes",
                                               forbidden=collector.forbidden_paths))
    assert result.status is CollectorStatus.OK, result.error
    dumps = result.facts["coredumps"]
    assert [(d["executable"], d["signal"], d["time"]) for d in dumps] == [
        ("/usr/lib/thunderbird/thunderbird", 11, "2024-03-14T08:02:14+00:00"),
        ("/usr/bin/evolution-source-registry", 6, "2024-03-14T09:02:02+00:00"),
    ]
    assert any("coredumpctl list --since" in call and "--json=short" in call for call in systemd_runner.calls)


def test_dpkg_parsing_keeps_installed_packages_and_second_architectures():
    lines = [
        "ii \tbash\t5.2.15-2+b2\tamd64",
        "ii \tlibc6\t2.36-9+deb12u4\tamd64",
        "ii \tlibc6\t2.36-9+deb12u4\ti386",
        "rc \tgimp\t2.10.34-1\tamd64",  # removed, config files left
        "un \tnot-there\t\tamd64",
        "garbage line",
    ]
    assert parse_dpkg(lines) == {"bash": "5.2.15-2+b2", "libc6": "2.36-9+deb12u4", "libc6:i386": "2.36-9+deb12u4"}


def test_rpm_parsing_keeps_every_kernel():
    packages = parse_rpm((FIXTURES / "linux" / "rpm.tsv").read_text().splitlines())
    assert packages["kernel-core"] == "6.8.9-300.fc40 6.8.7-300.fc40"
    assert packages["glibc"] == "2.39-8.fc40" and packages["glibc.i686"] == "2.39-8.fc40"
    assert len(packages) == 5


def test_disk_full_threshold_is_ninety_percent():
    disks = [{"mountpoint": m, "percent": p, "free": 1} for m, p in (("/", 89.9), ("/home", 90.0), ("/var", 99.5))]
    assert [d["mountpoint"] for d in full_mounts(disks)] == ["/home", "/var"]
    parsed = parse_df_kp("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                         "/dev/sda1 100 95 5 95% /\ntmpfs 100 100 0 100% /run\n")
    assert [(d["mountpoint"], d["percent"]) for d in parsed] == [("/", 95.0)]


@pytest.mark.parametrize(("line", "shape"), [
    ("Mar 14 09:02:11 pc kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm python3: "
     "reading directory lblock 0",
     "kernel: EXT4-fs error (device sda1): ext4_find_entry:<n>: inode #<n>: comm python3: reading directory lblock <n>"),
    ("Mar 14 09:02:11 pc cupsd[811]: [Job 42] HP_LaserJet_4000 stopped: 404 after 1500ms",
     "cupsd[<n>]: [Job <n>] HP_LaserJet_4000 stopped: <n> after <n>ms"),
    ("2024-03-14T09:02:11Z pc python3.11[77]: nvme0n1 timeout on eth0 at 12:30:01",
     "python3.<n>[<n>]: nvme0n1 timeout on eth0 at <n>:<n>:<n>"),
])
def test_normalisation_keeps_digits_inside_names(line, shape):
    # Names keep their digits (EXT4-fs, HP_LaserJet_4000, python3, sda1); counts, ids, ports and times go.
    assert normalise_line(line, has_host=True) == shape


def test_printers_with_numbered_names_stay_apart_but_job_numbers_merge():
    counter = ErrorCounter(_secrets_only)
    for job in (1, 2, 3):
        counter.add(f"Mar 14 09:02:1{job} pc cupsd[811]: [Job {job}] HP_LaserJet_4000 stopped", "cups", has_host=True)
    counter.add("Mar 14 09:02:14 pc cupsd[811]: [Job 4] HP_LaserJet_5000 stopped", "cups", has_host=True)
    top = counter.top()
    assert [(entry["message"], entry["count"]) for entry in top] == [
        ("cupsd[<n>]: [Job <n>] HP_LaserJet_4000 stopped", 3), ("cupsd[<n>]: [Job <n>] HP_LaserJet_5000 stopped", 1)]
    assert top[0]["example"] == "Mar 14 09:02:11 pc cupsd[811]: [Job 1] HP_LaserJet_4000 stopped"


def test_normalised_lines_group_errors_that_differ_only_in_numbers():
    a = "2024-03-14T09:02:11+0100 laptop kernel: usb 1-3: device descriptor read/64, error -71 at 0xffff8a3c"
    b = "2024-03-14T11:45:00+0100 laptop kernel: usb 1-4: device descriptor read/64, error -110 at 0xffff1234"
    c = "Mar 14 09:02:11 laptop app[4242]: job 6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f failed to reach 10.0.0.7:443"
    assert normalise_line(a, has_host=True) == normalise_line(b, has_host=True)
    assert normalise_line(c, has_host=True) == "app[<n>]: job <uuid> failed to reach <ip>"
    counter = ErrorCounter(_secrets_only)
    for line in (a, b, c, a):
        counter.add(line, "journal", has_host=True)
    top = counter.top()
    assert [entry["count"] for entry in top] == [3, 1]
    assert top[0]["example"] == a


def _secrets_only(text: str) -> str:
    return Redactor().redact_text(text)[0]


def test_error_lines_are_redacted_before_they_are_normalised():
    # Digits replaced first would turn S3cretPass into S<n>cretPass, which no detector recognises.
    lines = [f"2024-05-01T10:00:0{n}Z pc app[12]: ERROR upstream http://user:S3cretPass@proxy:{3128 + n} refused"
             for n in range(3)]
    counter = ErrorCounter(_secrets_only)
    for line in lines:
        counter.add(line, "journal", has_host=True)
    [entry] = counter.top()
    assert entry["count"] == 3
    assert "cretPass" not in entry["message"] and "cretPass" not in entry["example"]
    assert "[REDACTED:url-password]" in entry["message"] and entry["message"].startswith("app[<n>]: ERROR upstream")
    assert entry["example"] == _secrets_only(lines[0])


@linux_only
def test_the_logs_collector_redacts_with_the_bundles_redactor(tmp_path: Path, monkeypatch):
    log = tmp_path / "app.log"
    log.write_text("2024-05-01T10:00:00Z app[7]: ERROR login for alice4 failed\n")
    monkeypatch.setattr(logs, "journal_available", lambda: False)
    monkeypatch.setattr(LogsCollector, "syslog_paths", (str(tmp_path / "no-syslog"),))
    redactor = Redactor(RedactionOptions(usernames=True, known_usernames=("alice4",)))
    root = CollectContext(tmp_path / "stage", "linux", CollectOptions(log_globs=[str(log)]), redactor=redactor)
    result = run_collector(LogsCollector(), root.for_collector("logs", 15.0, ()))
    assert result.status is CollectorStatus.OK, result.error
    [entry] = result.facts["top_errors"]
    # Normalised first, "alice4" would have become "alice<n>", which the redactor no longer knows.
    assert "alice" not in entry["message"] and "alice" not in entry["example"]
    assert entry["message"].startswith("app[<n>]: ERROR login for user-")
    assert redactor.pseudonyms.spellings("username") == {"alice4"}


def test_a_syslog_line_without_a_year_takes_it_from_now():
    new_year = datetime(2025, 1, 1, 0, 30, tzinfo=timezone.utc)
    assert line_time("Dec 31 23:50:00 pc app: error", new_year).year == 2024  # a December line read in January
    assert line_time("Jan  1 00:10:00 pc app: error", new_year).year == 2025
    assert line_time("Mar 14 09:00:00 pc app: error", NOW).date().isoformat() == "2024-03-14"


def test_syslog_filter_keeps_recent_error_lines_only(tmp_path: Path):
    now = NOW.astimezone()
    old, recent = now - timedelta(hours=30), now - timedelta(hours=1)
    bsd = recent.strftime("%b %d %H:%M:%S")  # traditional syslog: no year, no zone
    syslog = tmp_path / "syslog"
    syslog.write_text(
        f"{old.isoformat()} pc kernel: old error that is out of the window\n"
        f"{recent.isoformat()} pc systemd[1]: Started Session 4 of user anna.\n"
        f"{recent.isoformat()} pc NetworkManager[611]: <warn>  [1710403334.1182] dhcp4 (wlp0s20f3): request timed out\n"
        f"{recent.isoformat()} pc python3[900]: Traceback (most recent call last):\n"
        "  File \"/usr/bin/app\", line 3, in <module>\n"
        f"{bsd} pc kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory\n"
    )
    stats: dict = {}
    kept = list(recent_error_lines([str(syslog)], now - timedelta(hours=24), lambda: False, stats, now=now))
    assert len(kept) == 4
    assert "dhcp4" in kept[0] and "Traceback" in kept[1]
    assert kept[2].startswith("  File")  # a continuation follows its error line
    assert "EXT4-fs error" in kept[3]


@linux_only
def test_syslog_fallback_without_journald(make_ctx, tmp_path: Path, monkeypatch):
    now = NOW.astimezone()
    syslog = tmp_path / "syslog"
    syslog.write_text("".join(
        f"{(now - timedelta(minutes=n - 0.5)).isoformat()} pc app[{n}]: error: cannot open /srv/data/{n}.db\n"
        for n in range(2000, 0, -1)))
    monkeypatch.setattr(logs, "journal_available", lambda: False)
    monkeypatch.setattr(LogsCollector, "syslog_paths", (str(syslog),))
    ctx = make_ctx("linux", category="logs", log_max_bytes=16 * 1024, now=NOW)
    result = run_collector(LogsCollector(), ctx)
    assert result.status is CollectorStatus.OK, result.error
    facts = result.facts
    assert facts["source"] == "syslog" and facts["syslog_lines"] == 1440  # the last 24 h of one-a-minute
    assert facts["top_errors"][0] == {"message": "app[<n>]: error: cannot open /srv/data/<n>.db", "count": 1440,
                                      "example": facts["top_errors"][0]["example"], "source": "syslog"}
    staged = ctx.path("logs/syslog-errors.txt")
    assert staged.stat().st_size <= 16 * 1024
    assert staged.read_text().splitlines()[-1].endswith("/srv/data/1.db")


@linux_only
def test_log_globs_are_copied_capped_and_forbidden_ones_skipped(make_ctx, tmp_path: Path):
    home = tmp_path / "home"
    app = home / ".local" / "state" / "app"
    app.mkdir(parents=True)
    (app / "app.log").write_text("".join(f"{n} info all good\n" for n in range(100_000)) + "FATAL: last words\n")
    (app / "small.log").write_text("warning: disk almost full\nok\n")
    (app / "tls.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    collector = LogsCollector()
    ctx = make_ctx("linux", category="logs", home=home, forbidden=collector.forbidden_paths,
                   log_globs=["~/.local/state/app/*"], log_max_bytes=32 * 1024)
    result = run_collector(collector, ctx)
    files = {Path(f["path"]).name: f for f in result.facts["log_files"]["files"]}
    assert files["app.log"]["status"] == "truncated" and files["app.log"]["error_lines"] == 1
    assert ctx.path(files["app.log"]["staged"]).read_text().endswith("FATAL: last words\n")
    assert files["small.log"]["status"] == "ok" and files["small.log"]["error_lines"] == 1
    assert files["tls.key"]["status"] == "skipped" and not ctx.path(files["tls.key"]["staged"]).exists()
    assert result.facts["log_files"]["patterns"] == [{"pattern": "~/.local/state/app/*", "matches": 3}]
    assert all(item.path.startswith("logs/files/") for item in result.items if "files" in item.path)
    assert os.path.basename(files["app.log"]["staged"]) == "app.log"
