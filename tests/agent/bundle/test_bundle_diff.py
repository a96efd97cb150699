"""diff_bundles(): two synthetic bundles of one PC, as directories and as archives."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from protocol.archive import pack
from agent.bundle.diff import diff_bundles, version_key
from protocol.errors import InvalidInputError, NotFoundError

BEFORE_SUMMARY = {
    "hostname": "pc-7",
    "os": {"name": "Ubuntu", "version": "22.04", "kernel": "6.5.0-17-generic", "build": None},
    "hardware": {"memory_total": 16 * 2**30},
    "disks": [{"mount": "/", "used_percent": 71.0}, {"mount": "/home", "used_percent": 40.0},
              {"mount": "/data", "used_percent": 50.0}],
    "services": {"failed": ["cups.service"], "stopped_enabled": []},
    "errors": {"top": [{"message": "kernel: usb <n>-<n>: device descriptor read error", "count": 12},
                       {"message": "cupsd: printer offline", "count": 4},
                       {"message": "NetworkManager: dhcp timeout", "count": 2}]},
    "crashes": {"count": 0},
}
AFTER_SUMMARY = {
    "hostname": "pc-7",
    "os": {"name": "Ubuntu", "version": "22.04", "kernel": "6.5.0-18-generic", "build": None},
    "hardware": {"memory_total": 8 * 2**30},
    "disks": [{"mount": "/", "used_percent": 93.5}, {"mount": "/home", "used_percent": 42.0},
              {"mount": "/media/usb", "used_percent": 10.0}],
    "services": {"failed": ["nginx.service"], "stopped_enabled": ["ssh.service"]},
    "errors": {"top": [{"message": "kernel: usb <n>-<n>: device descriptor read error", "count": 30},
                       {"message": "nginx: bind() to <ip>:<n> failed (Address already in use)", "count": 7},
                       {"message": "NetworkManager: dhcp timeout", "count": 1}]},
    "crashes": {"count": 2},
}
BEFORE_PACKAGES = {"openssl": "3.0.2-0ubuntu1.12", "firefox": "122.0+build2", "nginx": "1.18.0-6ubuntu14.4",
                   "libc6": "2.35-0ubuntu3.6", "old-tool": "1.0", "kernel-tools": "2:1.9~rc1"}
AFTER_PACKAGES = {"openssl": "3.0.2-0ubuntu1.15", "firefox": "121.0+build1", "nginx": "1.18.0-6ubuntu14.4",
                  "libc6": "2.35-0ubuntu3.6", "zoom": "5.17.5", "kernel-tools": "2:1.9"}


def write_bundle(root: Path, created_at: str, summary: dict, packages: dict | None) -> Path:
    """Write the parts of a bundle directory the diff reads."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"schema_version": 1, "created_at": created_at,
                                                    "hostname": summary.get("hostname")}))
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "report.html").write_text("<!DOCTYPE html><p>report</p>")
    if packages is not None:
        (root / "raw/software").mkdir(parents=True)
        (root / "raw/software/packages.json").write_text(json.dumps({"manager": "dpkg", "packages": packages}))
    return root


@pytest.fixture
def pair(tmp_path):
    old = write_bundle(tmp_path / "old", "2024-03-01T09:00:00+00:00", BEFORE_SUMMARY, BEFORE_PACKAGES)
    new = write_bundle(tmp_path / "new", "2024-03-08T09:00:00+00:00", AFTER_SUMMARY, AFTER_PACKAGES)
    return old, new


def check_expected_changes(diff) -> None:
    assert diff.before.created_at.startswith("2024-03-01") and diff.after.created_at.startswith("2024-03-08")
    assert diff.packages["upgraded"] == [
        {"name": "kernel-tools", "before": "2:1.9~rc1", "after": "2:1.9"},
        {"name": "openssl", "before": "3.0.2-0ubuntu1.12", "after": "3.0.2-0ubuntu1.15"},
    ]
    assert diff.packages["downgraded"] == [{"name": "firefox", "before": "122.0+build2", "after": "121.0+build1"}]
    assert diff.packages["added"] == [{"name": "zoom", "version": "5.17.5"}]
    assert diff.packages["removed"] == [{"name": "old-tool", "version": "1.0"}]
    assert diff.services == {"newly_failed": ["nginx.service"], "recovered": ["cups.service"],
                             "newly_stopped": ["ssh.service"]}
    assert diff.disks["newly_full"] == [{"mount": "/", "before": 71.0, "after": 93.5}]
    assert diff.disks["usage"] == [{"mount": "/", "before": 71.0, "after": 93.5, "change": 22.5}]  # /home moved 2
    assert diff.disks["new_mounts"] == [{"mount": "/media/usb", "used_percent": 10.0}]
    assert diff.disks["removed_mounts"] == [{"mount": "/data", "used_percent": 50.0}]
    assert [e["message"] for e in diff.errors["new"]] == [
        "nginx: bind() to <ip>:<n> failed (Address already in use)"]
    assert [e["message"] for e in diff.errors["gone"]] == ["cupsd: printer offline"]
    assert diff.errors["more"] == [{"message": "kernel: usb <n>-<n>: device descriptor read error",
                                    "before": 12, "after": 30}]
    assert diff.errors["fewer"] == [{"message": "NetworkManager: dhcp timeout", "before": 2, "after": 1}]
    assert diff.os == [{"field": "kernel", "before": "6.5.0-17-generic", "after": "6.5.0-18-generic"}]
    assert diff.memory == {"before": 16 * 2**30, "after": 8 * 2**30}
    assert diff.crashes == {"before": 0, "after": 2}
    assert not diff.empty


def test_two_bundle_directories(pair):
    diff = diff_bundles(*pair)
    check_expected_changes(diff)
    assert json.loads(json.dumps(diff.to_dict()))["services"]["newly_failed"] == ["nginx.service"]
    text = "\n".join(diff.render_text())
    for expected in ("^ openssl 3.0.2-0ubuntu1.12 -> 3.0.2-0ubuntu1.15", "failed now: nginx.service",
                     "FULL now: / 93.5 %", "new (7x): nginx: bind()", "kernel 6.5.0-17-generic -> 6.5.0-18-generic",
                     "Memory: 16.0 GiB -> 8.0 GiB", "Crashes: 0 -> 2"):
        assert expected in text


def test_the_older_bundle_is_before_whatever_the_argument_order(pair):
    check_expected_changes(diff_bundles(pair[1], pair[0]))


def test_two_archives_are_read_without_extracting(pair, tmp_path):
    archives = []
    for bundle in pair:
        pack(bundle, tmp_path / f"{bundle.name}.tar.gz")
        archives.append(tmp_path / f"{bundle.name}.tar.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    check_expected_changes(diff_bundles(*archives))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_big_diff_fits_one_screen(tmp_path):
    old_summary = copy.deepcopy(BEFORE_SUMMARY)
    new_summary = copy.deepcopy(AFTER_SUMMARY)
    new_summary["errors"]["top"] = [{"message": f"service{n}: failure number <n>", "count": n} for n in range(60)]
    new_summary["services"]["failed"] = [f"unit{n}.service" for n in range(45)]
    new_summary["disks"] = [{"mount": f"/mnt/{n}", "used_percent": 95.0} for n in range(30)]
    old_packages = {f"pkg{n}": "1.0" for n in range(800)}
    new_packages = {f"pkg{n}": "1.1" for n in range(400, 1200)}
    old = write_bundle(tmp_path / "old", "2024-03-01T09:00:00+00:00", old_summary, old_packages)
    new = write_bundle(tmp_path / "new", "2024-03-08T09:00:00+00:00", new_summary, new_packages)
    diff = diff_bundles(old, new)
    assert len(diff.packages["upgraded"]) == 400 and len(diff.packages["added"]) == 400
    lines = diff.render_text()
    assert len(lines) <= 40
    start = lines.index("Packages: 400 upgraded, 400 added, 400 removed") + 1
    shown = [line for line in lines[start:] if line.startswith("  ^ ")]
    assert shown and lines[start + len(shown)] == f"  ... +{1200 - len(shown)} more"
    assert lines[lines.index("Errors: 60 new, 3 gone") + 1].startswith("  new (59x): service59")
    assert any("400 upgraded, 400 added, 400 removed" in line for line in lines)
    assert len(diff.render_text(max_lines=12)) <= 12


def test_identical_bundles_have_no_differences(pair, tmp_path):
    twin = write_bundle(tmp_path / "twin", "2024-03-09T09:00:00+00:00", BEFORE_SUMMARY, BEFORE_PACKAGES)
    diff = diff_bundles(pair[0], twin)
    assert diff.empty
    assert diff.render_text()[1].startswith("No differences")


def test_missing_parts_are_notes_not_crashes(tmp_path):
    old = write_bundle(tmp_path / "old", "2024-03-01T09:00:00+00:00", {"services": {"failed": None}}, None)
    new = write_bundle(tmp_path / "new", "2024-03-02T09:00:00+00:00", AFTER_SUMMARY, AFTER_PACKAGES)
    diff = diff_bundles(old, new)
    assert diff.packages is None
    assert any("no package list" in note for note in diff.notes)
    assert any("failed services are unknown" in note for note in diff.notes)
    assert diff.disks["new_mounts"] and diff.disks["newly_full"] == [{"mount": "/", "before": None, "after": 93.5}]


def test_bad_inputs_are_refused(pair, tmp_path):
    with pytest.raises(NotFoundError):
        diff_bundles(pair[0], tmp_path / "nowhere")
    (pair[1] / "summary.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="not a JSON object"):
        diff_bundles(*pair)
    (tmp_path / "fake.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(InvalidInputError, match="not a gzip"):
        diff_bundles(pair[0], tmp_path / "fake.tar.gz")


def test_version_order():
    assert version_key("1.10") > version_key("1.9")
    assert version_key("2:1.0") > version_key("1:9.9")
    assert version_key("1.0~rc1") < version_key("1.0") < version_key("1.0.1") < version_key("1.0a")
    assert version_key("3.0.2-0ubuntu1.15") > version_key("3.0.2-0ubuntu1.12")
