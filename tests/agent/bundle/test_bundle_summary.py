"""build_summary(): stable keys from any platform's facts, and nulls (never exceptions) for
collectors that are missing, failed or returned something odd."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from agent.diagnostics import CollectOptions, collect
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus, Item, ItemKind, ItemStatus
from agent.bundle.report_html import render_report
from agent.bundle.summary import SUMMARY_KEYS, build_summary
from tests.agent.diagnostics.conftest import DARWIN_RULES, WINDOWS_RULES, FixtureRunner

NOW = datetime(2024, 3, 14, 9, 0, tzinfo=timezone.utc)


def report_of(*results: CollectorResult, platform: str = "linux") -> CollectionReport:
    return CollectionReport(NOW, NOW, platform, 20.0, list(results))


def ok(name: str, facts: dict, items: list[Item] | None = None) -> CollectorResult:
    return CollectorResult(name, name, CollectorStatus.OK, 0.1, items or [], facts)


def test_an_empty_report_has_every_key_and_nulls():
    summary = build_summary(report_of())
    assert tuple(summary) == SUMMARY_KEYS
    for key in ("os", "hostname", "hardware", "disks", "disk_full", "network", "services", "software", "errors",
                "crashes", "processes"):
        assert summary[key] is None, key
    assert summary["attention"] == []
    assert summary["collection"]["collectors"] == {}


def test_malformed_facts_give_nulls_not_exceptions():
    weird = [
        ok("system", {"os": "Linux", "kernel": ["6.1"], "hostname": 42, "timezone": "UTC"}),
        ok("hardware", {"cpu": None, "memory": {"total": "16 GB"}, "disks": [None, {"mountpoint": 3},
                                                                           {"mountpoint": "/", "percent": "full"}]}),
        ok("network", {"default_routes": "none", "dns": {"nameservers": "1.1.1.1"}, "proxy": {"environment": []},
                       "reachability": [None, {"target": "x", "dns": "ok"}]}),
        ok("services", {"failed": "cups", "enabled_not_running": [1, {"unit": "ssh.service"}]}),
        ok("software", {"apps": {"git": "2.43"}, "packages": {"a": "1"}}),
        ok("logs", {"top_errors": [{"message": None}, "text", {"message": "boom", "count": "3"}]}),
        ok("crashes", {"copied_reports": "x", "coredumps": [{"signal": 11}], "recent_count": True}),
        ok("processes", {"top_cpu": [{"pid": "1"}], "zombies": 2}),
    ]
    summary = build_summary(report_of(*weird))
    assert summary["os"]["name"] is None and summary["hostname"] is None and summary["timezone"] is None
    assert summary["hardware"]["memory_total"] is None
    assert summary["disks"] == [{"mount": "/", "fs": None, "size": None, "free": None, "used_percent": None}]
    assert summary["disk_full"] == []
    assert summary["network"]["dns"] == [] and summary["network"]["default_route"] is None
    assert summary["services"]["failed"] is None and summary["services"]["stopped_enabled"] == ["ssh.service"]
    assert summary["software"] == {"manager": None, "package_count": 1, "extra_counts": {}, "apps": {"git": "2.43"}}
    assert summary["errors"]["top"] == [{"message": "boom", "count": 0, "example": None, "source": None}]
    assert summary["crashes"]["count"] == 0 and summary["crashes"]["recent"][0]["detail"] == "SIGSEGV"  # by name, not "11"
    assert summary["processes"]["zombies"] is None and summary["processes"]["top_cpu"][0]["pid"] is None
    render_report({"items": [], "collectors": []}, summary, {r.category: r.facts for r in weird})


def test_failed_and_excluded_collectors_are_null_and_said_so():
    items = [Item("system/x.txt", "system", "uname", ItemKind.COMMAND, ItemStatus.TIMEOUT)]
    report = report_of(
        CollectorResult("system", "system", CollectorStatus.TIMEOUT, 10.0, items, {}, "still running"),
        ok("hardware", {"disks": [{"mountpoint": "/", "percent": 97.0, "free": 1}]}),
        ok("services", {"failed": [{"unit": "cups.service"}], "enabled_not_running": []}),
    )
    summary = build_summary(report, excluded={"services"})
    assert summary["os"] is None and summary["services"] is None
    assert summary["disk_full"] == [{"mount": "/", "used_percent": 97.0, "free": 1}]
    assert summary["collection"]["collectors"] == {"system": "timeout", "hardware": "ok", "services": "excluded"}
    assert summary["collection"]["items_by_status"] == {"timeout": 1}
    assert "Disk / is 97 % full" in summary["attention"]
    assert "Collection incomplete: system did not finish" in summary["attention"]


def _recorded(tmp_path: Path, platform: str, rules) -> CollectionReport:
    runner = FixtureRunner(rules)
    profile = tmp_path / "Users" / "anna"
    (profile / "AppData" / "Local").mkdir(parents=True)
    (tmp_path / "ProgramData").mkdir()
    env = {"USERPROFILE": str(profile), "LOCALAPPDATA": str(profile / "AppData/Local"),
           "PROGRAMDATA": str(tmp_path / "ProgramData"), "HTTPS_PROXY": "http://proxy.corp.example.com:8080"}
    return collect(CollectOptions(), tmp_path / "stage", platform=platform, command_runner=runner,
                   which=runner.which, env=env, home=profile)


def test_windows_facts(tmp_path):
    summary = build_summary(_recorded(tmp_path, "windows", WINDOWS_RULES))
    assert summary["os"]["name"] == "Microsoft Windows 11 Pro" and summary["os"]["build"] == "22631"
    assert summary["hostname"] == "DESKTOP-7KQ2M4L"
    assert summary["disk_full"] == [{"mount": "D:", "used_percent": 95.3, "free": 46713856000}]
    assert summary["services"]["manager"] == "windows-scm"
    assert summary["services"]["stopped_enabled"] == ["Spooler", "WSearch", "vpnagent"]
    assert summary["network"]["default_route"] == {"gateway": "192.168.1.1", "interface": "WLAN"}
    assert {"source": "windows-user", "name": "server", "value": "proxy.corp.example.com:8080"} in \
        summary["network"]["proxies"]
    assert summary["errors"]["top"][0]["count"] == 3 and "Print Spooler" in summary["errors"]["top"][0]["message"]
    # Beside its shape, a top error keeps one real line as it was logged.
    assert "Print Spooler" in summary["errors"]["top"][0]["example"]
    assert "<n>" not in summary["errors"]["top"][0]["example"]
    assert summary["hardware"]["battery"] == {"percent": 64, "plugged": False, "minutes_left": 187}
    assert "Disk D: is 95.3 % full" in summary["attention"]


def test_macos_facts(tmp_path):
    summary = build_summary(_recorded(tmp_path, "darwin", DARWIN_RULES))
    assert summary["os"]["pretty_name"] == "macOS 14.4.1" and summary["os"]["kernel"] == "23.4.0"
    assert summary["services"]["manager"] == "launchd"
    assert "com.example.vpn-helper" in summary["services"]["failed"]
    assert summary["disk_full"][0]["mount"] == "/System/Volumes/Data"
    assert summary["software"]["extra_counts"] == {"receipts": 6, "brew": 4}
    assert summary["network"]["dns_search"] == ["fritz.box"]
