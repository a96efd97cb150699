"""Each restic argv builder pins the exact argv it makes, on restic 0.14 and on a newer restic."""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

import pytest

from agent.snapshots.restic.backup import backup_argv
from agent.snapshots.restic.cat import cat_config_argv, cat_lock_argv
from agent.snapshots.restic.check import check_argv
from agent.snapshots.restic.diff import diff_argv
from agent.snapshots.restic.forget import Retention, forget_argv
from agent.snapshots.restic.init import init_argv
from agent.snapshots.restic.list_locks import list_locks_argv
from agent.snapshots.restic.ls import ls_argv
from agent.snapshots.restic.prune import prune_argv
from agent.snapshots.restic.repository import Repository, child_env, common_options, go_duration
from agent.snapshots.restic.restore import restore_argv
from agent.snapshots.restic.snapshots import snapshots_argv
from agent.snapshots.restic.stats import stats_argv
from agent.snapshots.restic.unlock import unlock_argv
from agent.snapshots.restic.version import Restic, Version
from protocol.errors import InvalidInputError

OLD = Restic("restic", Version(0, 14, 0))
NEW = Restic("restic", Version(0, 17, 3))
REPO = Repository("/srv/snap/repo", Path("/var/lib/helpline-agent/restic/local.password"))
BASE = ("--repo", "/srv/snap/repo", "--password-file", "/var/lib/helpline-agent/restic/local.password")
LOCK_ID = "29360a4e43f3b0f381ed0ac82471fcedac2bf9017388671e3b00b8564b6ee2fd"


def test_init():
    assert init_argv(OLD, REPO) == ("restic", "init", *BASE, "--json")


def test_backup_always_names_the_host_the_helpline_tag_and_absolute_paths():
    assert backup_argv(OLD, REPO, host="pc-17", paths=["/home/ann"]) == (
        "restic", "backup", *BASE, "--json", "--host", "pc-17", "--tag", "helpline", "--", "/home/ann",
    )


def test_backup_with_every_option():
    argv = backup_argv(
        OLD, REPO, host="pc-17", paths=["/home/ann", Path("/etc")], tags=["hourly", "helpline", "hourly"],
        excludes=["/home/ann/.cache", "*.tmp"], exclude_files=["/etc/helpline/excludes"], one_file_system=True,
        retry_lock=60,
    )
    assert argv == (
        "restic", "backup", *BASE, "--json", "--host", "pc-17", "--tag", "helpline", "--tag", "hourly",
        "--exclude", "/home/ann/.cache", "--exclude", "*.tmp", "--exclude-file", "/etc/helpline/excludes",
        "--one-file-system", "--", "/home/ann", "/etc",
    )


def test_backup_on_windows_elevated_asks_for_a_vss_snapshot():
    argv = backup_argv(NEW, REPO, host="DESK-7", paths=[PureWindowsPath(r"C:\Users\ann")], use_fs_snapshot=True,
                       retry_lock=90)
    assert argv == (
        "restic", "backup", *BASE, "--retry-lock", "90s", "--json", "--host", "DESK-7", "--tag", "helpline",
        "--use-fs-snapshot", "--", r"C:\Users\ann",
    )


def test_retry_lock_only_where_restic_has_it():
    assert "--retry-lock" not in backup_argv(OLD, REPO, host="pc", paths=["/a"], retry_lock=60)
    assert common_options(Restic("restic", Version(0, 16, 0)), REPO, retry_lock=60) == (*BASE, "--retry-lock", "60s")
    assert common_options(Restic("restic", Version(0, 15, 2)), REPO, retry_lock=60) == BASE
    assert common_options(NEW, REPO, retry_lock=60, no_lock=True) == (*BASE, "--no-lock")
    assert go_duration(0.2) == "1s" and go_duration(150) == "150s"


@pytest.mark.parametrize("bad", [
    {"paths": []}, {"paths": ["home/ann"]}, {"paths": ["/a"], "host": "-x"}, {"paths": ["/a"], "host": "a b"},
    {"paths": ["/a"], "tags": ["a,b"]}, {"paths": ["/a"], "excludes": [""]},
    {"paths": ["/a"], "exclude_files": ["rel/excludes"]},
])
def test_backup_refuses_values_restic_would_misread(bad):
    options = {"host": "pc", **bad}
    with pytest.raises(InvalidInputError):
        backup_argv(OLD, REPO, **options)


def test_snapshots():
    assert snapshots_argv(OLD, REPO) == ("restic", "snapshots", *BASE, "--json", "--tag", "helpline")
    assert snapshots_argv(NEW, REPO, host="pc-17", tags=("helpline", "hourly"), paths=["/home/ann"], latest=3,
                          retry_lock=30) == (
        "restic", "snapshots", *BASE, "--retry-lock", "30s", "--json", "--host", "pc-17", "--tag", "helpline,hourly",
        "--path", "/home/ann", "--latest", "3",
    )
    assert snapshots_argv(OLD, REPO, tags=()) == ("restic", "snapshots", *BASE, "--json")


def test_restore_latest_of_this_host_and_its_paths():
    assert restore_argv(OLD, REPO, snapshot="latest", target="/home/ann/Restored", host="pc-17",
                        paths=["/home/ann"], includes=["/home/ann/report.odt"]) == (
        "restic", "restore", *BASE, "--target", "/home/ann/Restored", "--include", "/home/ann/report.odt",
        "--host", "pc-17", "--path", "/home/ann", "--", "latest",
    )


def test_restore_on_a_replacement_pc_takes_no_lock_and_newer_restic_reports_json():
    assert restore_argv(NEW, REPO, snapshot="1a2b3c4d", target="/home/ann", no_lock=True, retry_lock=60) == (
        "restic", "restore", *BASE, "--no-lock", "--target", "/home/ann", "--json", "--", "1a2b3c4d",
    )


@pytest.mark.parametrize("bad", [
    {"snapshot": "latest", "target": "/t"},  # latest of which PC?
    {"snapshot": "--all", "target": "/t"}, {"snapshot": "1a2b", "target": "/t"},
    {"snapshot": "1a2b3c4d", "target": "relative"}, {"snapshot": "1a2b3c4d", "target": "/t", "includes": ["x"]},
])
def test_restore_refuses(bad):
    with pytest.raises(InvalidInputError):
        restore_argv(OLD, REPO, **bad)


def test_ls():
    assert ls_argv(OLD, REPO, snapshot="1a2b3c4d") == ("restic", "ls", *BASE, "--json", "--", "1a2b3c4d")
    assert ls_argv(NEW, REPO, snapshot="latest", host="pc-17", paths=["/home/ann"], folders=["/home/ann/Documents"],
                   recursive=True, no_lock=True) == (
        "restic", "ls", *BASE, "--no-lock", "--json", "--recursive", "--host", "pc-17", "--path", "/home/ann",
        "--", "latest", "/home/ann/Documents",
    )
    with pytest.raises(InvalidInputError):
        ls_argv(OLD, REPO, snapshot="latest")


def test_forget_keeps_by_policy_for_this_host_and_tag_only():
    retention = Retention(hourly=24, daily=7, weekly=4)
    assert forget_argv(OLD, REPO, host="pc-17", retention=retention) == (
        "restic", "forget", *BASE, "--json", "--host", "pc-17", "--tag", "helpline",
        "--keep-hourly", "24", "--keep-daily", "7", "--keep-weekly", "4",
    )
    every = Retention(last=2, hourly=1, daily=1, weekly=1, monthly=12, yearly=3, within="1y6m")
    assert forget_argv(NEW, REPO, host="pc-17", retention=every, prune=True, retry_lock=60) == (
        "restic", "forget", *BASE, "--retry-lock", "60s", "--json", "--host", "pc-17", "--tag", "helpline",
        "--keep-last", "2", "--keep-hourly", "1", "--keep-daily", "1", "--keep-weekly", "1", "--keep-monthly", "12",
        "--keep-yearly", "3", "--keep-within", "1y6m", "--prune",
    )


@pytest.mark.parametrize("bad", [{}, {"daily": 0}, {"daily": -1}, {"daily": True}, {"within": "2 days"},
                                 {"within": ""}])
def test_a_retention_policy_must_keep_something_sensible(bad):
    with pytest.raises(InvalidInputError):
        Retention(**bad)


def test_prune_unlock_list_and_cat():
    assert prune_argv(OLD, REPO) == ("restic", "prune", *BASE)
    assert prune_argv(NEW, REPO, retry_lock=5) == ("restic", "prune", *BASE, "--retry-lock", "5s")
    assert unlock_argv(NEW, REPO) == ("restic", "unlock", *BASE)
    assert list_locks_argv(OLD, REPO) == ("restic", "list", *BASE, "--no-lock", "locks")
    assert cat_config_argv(OLD, REPO) == ("restic", "cat", *BASE, "--no-lock", "config")
    assert cat_lock_argv(OLD, REPO, LOCK_ID) == ("restic", "cat", *BASE, "--no-lock", "lock", LOCK_ID)
    with pytest.raises(InvalidInputError):
        cat_lock_argv(OLD, REPO, "29360a4e")


def test_check_reads_a_data_subset():
    assert check_argv(OLD, REPO) == ("restic", "check", *BASE)
    assert check_argv(OLD, REPO, read_data_subset="1/10") == ("restic", "check", *BASE, "--read-data-subset", "1/10")
    assert check_argv(NEW, REPO, read_data_subset="2.5%", retry_lock=60) == (
        "restic", "check", *BASE, "--retry-lock", "60s", "--read-data-subset", "2.5%")
    for bad in ("0/10", "11/10", "101%", "all", "1/10; rm"):
        with pytest.raises(InvalidInputError):
            check_argv(OLD, REPO, read_data_subset=bad)


def test_diff_and_stats():
    assert diff_argv(OLD, REPO, before="1a2b3c4d", after="5e6f7a8b") == (
        "restic", "diff", *BASE, "--json", "--", "1a2b3c4d", "5e6f7a8b")
    with pytest.raises(InvalidInputError):
        diff_argv(OLD, REPO, before="latest", after="5e6f7a8b")
    assert stats_argv(OLD, REPO, snapshots=["1a2b3c4d"]) == (
        "restic", "stats", *BASE, "--json", "--mode", "restore-size", "--", "1a2b3c4d")
    assert stats_argv(OLD, REPO, mode="raw-data", host="pc-17", paths=["/home/ann"]) == (
        "restic", "stats", *BASE, "--json", "--mode", "raw-data", "--host", "pc-17", "--path", "/home/ann", "--")
    with pytest.raises(InvalidInputError):
        stats_argv(OLD, REPO, mode="everything")


def test_cacert_and_cache_dir_are_common_options():
    repo = Repository("rest:https://helpline.example:8443/agents/pc-17/", Path("/p/pw"), cacert=Path("/p/ca.pem"),
                      cache_dir=Path("/var/cache/helpline/restic"))
    assert snapshots_argv(OLD, repo, tags=()) == (
        "restic", "snapshots", "--repo", "rest:https://helpline.example:8443/agents/pc-17/", "--password-file",
        "/p/pw", "--cacert", "/p/ca.pem", "--cache-dir", "/var/cache/helpline/restic", "--json",
    )


def test_a_location_carrying_a_credential_goes_in_the_environment_not_argv():
    repo = Repository("rest:https://pc-17:s3cr3t-t0ken@helpline.example/agents/pc-17/", Path("/p/pw"))
    argv = init_argv(OLD, repo)
    assert argv == ("restic", "init", "--password-file", "/p/pw", "--json")
    assert not any("s3cr3t" in arg for arg in argv)
    env = child_env(repo)
    assert env["RESTIC_REPOSITORY"] == repo.location
    assert repo.credential == "s3cr3t-t0ken"
    assert repo.display == "rest:https://pc-17:***@helpline.example/agents/pc-17/"
    assert "s3cr3t-t0ken" in repo.secrets


def test_the_child_environment_never_carries_a_password():
    env = child_env(REPO)
    for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_PASSWORD_FILE", "RESTIC_REPOSITORY",
                 "RESTIC_REPOSITORY_FILE"):
        assert env[name] == ""  # blanks what the agent's own environment might hold
    assert REPO.credential is None and REPO.secrets == ()


def test_a_repository_needs_a_location_that_is_not_an_option():
    with pytest.raises(InvalidInputError):
        Repository("", Path("/p/pw"))
    with pytest.raises(InvalidInputError):
        Repository("--insecure-tls", Path("/p/pw"))


def test_a_credentialed_location_in_a_file_is_named_by_repository_file_only():
    repo = Repository("rest:https://pc-17:s3cr3t-t0ken@helpline.example/v1/restic/pc-17/", Path("/p/pw"),
                      location_file=Path("/p/server.repository"))
    argv = backup_argv(OLD, repo, host="pc-17", paths=["/home/ann"])
    assert argv[:6] == ("restic", "backup", "--repository-file", "/p/server.repository", "--password-file", "/p/pw")
    assert not any("s3cr3t" in arg for arg in argv)
    assert child_env(repo)["RESTIC_REPOSITORY"] == ""
    assert "s3cr3t-t0ken" in repo.secrets


def test_a_backup_can_be_dated_by_the_agents_clock_in_this_pcs_zone():
    from datetime import UTC, datetime

    when = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    argv = backup_argv(OLD, REPO, host="pc", paths=["/a"], time=when)
    assert argv[-4:] == ("--time", when.astimezone().strftime("%Y-%m-%d %H:%M:%S"), "--", "/a")


def test_the_configured_proxy_reaches_restic_and_without_one_the_systems_variables_stay(tmp_path, monkeypatch):
    config = tmp_path / "agent.toml"
    config.write_text('[server]\nproxy = "http://proxy.example.com:3128"\n')
    monkeypatch.setattr("agent.config.SYSTEM_CONFIG", tmp_path / "absent.toml")
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HELPLINE_AGENT_CONFIG", str(config))
    env = child_env(REPO)
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://proxy.example.com:3128"
    config.write_text("[server]\n")
    assert "HTTPS_PROXY" not in child_env(REPO) and "HTTP_PROXY" not in child_env(REPO)
