"""The [snapshots] policy: defaults, every key read, and one clear line naming the key of a bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agent.snapshots.policy import DEFAULT_EXCLUDES, parse_duration, parse_size, policy_from_config
from agent.snapshots.restic import Retention
from protocol.errors import ConfigError, ExitStatus

HOME = Path("/home/ann")
DATA = Path("/home/ann/.local/share/helpline/agent")


def test_the_defaults_snapshot_the_home_hourly_into_a_local_repository_and_the_servers():
    policy = policy_from_config({}, home=HOME, data_dir=DATA)
    assert policy.paths == (HOME,)
    assert policy.interval == timedelta(hours=1)
    assert policy.retention == Retention(hourly=24, daily=7, weekly=4)
    assert policy.local_repository == DATA / "snapshots" / "repository"
    assert policy.repositories == ("local", "server")
    assert policy.wait_on_battery and policy.enabled
    assert "**/.cache" in policy.excludes and "**/node_modules" in policy.excludes
    assert any("Trash" in e for e in policy.excludes) and any("cache2" in e for e in policy.excludes)
    assert "**/helpline/agent/outbox" in policy.excludes


def test_every_key_is_read():
    policy = policy_from_config({"snapshots": {
        "paths": ["~/Documents", "/srv/projects"], "exclude": ["*.iso"], "default_excludes": False,
        "interval": "30m", "keep_hourly": 0, "keep_daily": 14, "keep_weekly": 8, "keep_monthly": 6,
        "local_repository": "/var/backups/helpline", "server": False, "local_max_size": "200G",
        "free_space_margin": "5GiB", "wait_on_battery": False, "forget_every": "12h", "prune_every": "2w",
        "check_every": "3d", "verify_every": "2d", "verify_files": 5, "verify_bytes": "10M", "retry_after": "5m",
        "one_file_system": True,
    }}, home=HOME, data_dir=DATA)
    assert policy.paths == (HOME / "Documents", Path("/srv/projects"))
    assert policy.excludes == ("*.iso",)
    assert policy.interval == timedelta(minutes=30)
    assert policy.retention == Retention(daily=14, weekly=8, monthly=6)
    assert policy.local_repository == Path("/var/backups/helpline") and policy.repositories == ("local",)
    assert policy.local_max_size == 200 * 10**9 and policy.free_space_margin == 5 * 2**30
    assert not policy.wait_on_battery and policy.one_file_system
    assert (policy.forget_every, policy.prune_every, policy.check_every, policy.verify_every) == (
        timedelta(hours=12), timedelta(weeks=2), timedelta(days=3), timedelta(days=2))
    assert (policy.verify_files, policy.verify_bytes, policy.retry_after) == (5, 10**7, timedelta(minutes=5))


@pytest.mark.parametrize(("section", "names"), [
    ({"interval": "often"}, "interval"),
    ({"interval": "10s"}, "interval"),
    ({"keep_daily": -1}, "keep_daily"),
    ({"keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}, "keep"),
    ({"paths": "~"}, "paths"),
    ({"paths": ["Documents"]}, "paths"),
    ({"local_max_size": "lots"}, "local_max_size"),
    ({"local_max_size": "5ib"}, "local_max_size"),
    ({"wait_on_battery": "yes"}, "wait_on_battery"),
    ({"local": False, "server": False}, "neither"),
    ({"intervall": "1h"}, "intervall"),
    ({"verify_files": 0}, "verify_files"),
], ids=["interval-word", "interval-short", "keep-negative", "keeps-nothing", "paths-string", "paths-relative",
        "size-word", "size-unit-half", "battery-string", "no-repository", "typo", "verify-none"])
def test_a_bad_value_fails_in_one_line_naming_the_key(section, names):
    with pytest.raises(ConfigError) as raised:
        policy_from_config({"snapshots": section}, home=HOME, data_dir=DATA)
    assert names in raised.value.message and "\n" not in raised.value.message
    assert raised.value.status is ExitStatus.CONFIG


def test_durations_and_sizes():
    assert parse_duration("90m", "k") == timedelta(minutes=90)
    assert parse_duration(3600, "k") == timedelta(hours=1)
    for spelled in ("hourly", "1 hour", "60 minutes", "0.5h 30m", "1h"):  # what an admin writes, any way
        assert parse_duration(spelled, "k") == timedelta(hours=1)
    assert parse_duration("1d12h", "k") == timedelta(hours=36)
    assert parse_size("1.5T", "k") == 1_500_000_000_000
    assert parse_size("512MiB", "k") == 512 * 2**20
    assert parse_size(0, "k") == 0
    assert DEFAULT_EXCLUDES
