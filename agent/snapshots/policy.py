"""What the agent snapshots, how often, how long it keeps it and where: the ``[snapshots]`` policy.

The policy comes from the agent's configuration (``[snapshots]`` in
``agent.toml``, see :mod:`agent.config`) laid over the defaults below, and
the group policy delivered signed by the server (:mod:`agent.group_policy`)
laid over both: a key the group policy sets wins. Every value is checked here,
and a bad one fails with one line naming the key (a ConfigError, exit 3).
Example::

    [snapshots]
    paths = ["~", "/srv/projects"]
    exclude = ["*.iso"]
    interval = "1h"
    keep_hourly = 24
    keep_daily = 7
    keep_weekly = 4
    local_repository = "/var/backups/helpline"
    server = true
    local_max_size = "200G"
    free_space_margin = "5G"
    wait_on_battery = true
    verify_every = "3d"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from protocol import times
from protocol.errors import ConfigError, HelplineError
from protocol import units

from .restic.forget import Retention

#: Folders every snapshot leaves out: caches, trash, browser caches and folders a tool re-creates.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    # caches and trash (Linux, macOS, Windows)
    "**/.cache", "**/.local/share/Trash", "**/.Trash", "**/Library/Caches", "**/$RECYCLE.BIN",
    "**/AppData/Local/Temp", "**/AppData/Local/Microsoft/Windows/INetCache",
    # browser caches
    "**/.mozilla/firefox/*/cache2", "**/Google/Chrome/*/Cache", "**/Google/Chrome/*/Code Cache",
    "**/chromium/*/Cache", "**/Microsoft/Edge/*/Cache",
    # folders a build or package tool re-creates
    "**/node_modules", "**/__pycache__", "**/.venv", "**/.tox", "**/.gradle/caches", "**/.m2/repository",
    "**/target/debug", "**/target/release",
    # Helpline's own outbox and work folders (bundles are sent, not kept)
    "**/helpline/agent/outbox", "**/helpline/agent/work", "**/helpline/agent/snapshots",
)


#: The keys ``[snapshots]`` may hold; anything else is a typo worth refusing.
KNOWN_KEYS = frozenset({
    "enabled", "paths", "exclude", "default_excludes", "one_file_system", "interval", "keep_hourly",
    "keep_daily", "keep_weekly", "keep_monthly", "local", "local_repository", "server", "local_max_size",
    "free_space_margin", "wait_on_battery", "forget_every", "prune_every", "check_every", "verify_every",
    "verify_files", "verify_bytes", "retry_after",
})


@dataclass(frozen=True)
class SnapshotPolicy:
    """One PC's snapshot policy, every value checked."""

    paths: tuple[Path, ...]
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES
    one_file_system: bool = False
    interval: timedelta = timedelta(hours=1)
    retention: Retention = field(default_factory=lambda: Retention(hourly=24, daily=7, weekly=4))
    enabled: bool = True
    #: The local repository's folder; None when the policy keeps no local repository.
    local_repository: Path | None = None
    #: Snapshot into the server's repository too (when the PC is linked to a server).
    server: bool = True
    #: The local repository stops growing at this many bytes (None: no cap but the disk's margin).
    local_max_size: int | None = None
    #: Bytes that must stay free on the local repository's disk; a run that would eat into them is skipped.
    free_space_margin: int = 2 * 10**9
    wait_on_battery: bool = True
    forget_every: timedelta = timedelta(days=1)
    prune_every: timedelta = timedelta(days=7)
    check_every: timedelta = timedelta(days=7)
    verify_every: timedelta = timedelta(days=3)
    #: How many files, and bytes at most, a sample restore checks.
    verify_files: int = 20
    verify_bytes: int = 200 * 10**6
    #: How long after a failed run the next attempt waits (never longer than the interval).
    retry_after: timedelta = timedelta(minutes=15)

    @property
    def repositories(self) -> tuple[str, ...]:
        """The repositories this policy snapshots into, by name: ``local`` and/or ``server``."""
        return (*(("local",) if self.local_repository is not None else ()), *(("server",) if self.server else ()))


def parse_duration(value: Any, key: str) -> timedelta:
    """Return ``value`` (``90m``, ``1h``, ``1h30m``, ``2 days``, ``hourly``, or seconds as a number; see
    :func:`protocol.times.parse_duration`) as a timedelta of at least a minute."""
    if isinstance(value, bool):
        raise _bad(key, value, "a duration like 90m, 1h, 1h30m, 3d, 2w or hourly")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        try:
            seconds = times.parse_duration(str(value))
        except ValueError:
            raise _bad(key, value, "a duration like 90m, 1h, 1h30m, 3d, 2w or hourly") from None
    if seconds < 60:
        raise _bad(key, value, "a duration of at least a minute")
    return timedelta(seconds=seconds)


def parse_size(value: Any, key: str) -> int:
    """Return ``value`` (``500M``, ``20G``, ``1.5TiB``, or bytes as a number) as a whole number of bytes."""
    if isinstance(value, bool):
        raise _bad(key, value, "a size like 500M, 20G or 1T")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = units.parse_size(str(value))
        except ValueError:
            raise _bad(key, value, "a size like 500M, 20G or 1T") from None
    if number < 0:
        raise _bad(key, value, "a size of zero or more")
    return int(number)


def _bad(key: str, value: Any, wanted: str) -> ConfigError:
    return ConfigError(f"[snapshots] {key} = {value!r} in the agent configuration is not {wanted}",
                       hint="fix it in agent.toml (see `helpline snapshot status --help`)")


def _bool(section: dict[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise _bad(key, value, "true or false")
    return value


def _count(section: dict[str, Any], key: str, default: int | None) -> int | None:
    value = section.get(key, default)
    if key.startswith("keep_") and (value is None or (value == 0 and not isinstance(value, bool))):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(key, value, "a whole number of at least 1 (or 0 to leave it out)")
    return value


def _strings(section: dict[str, Any], key: str) -> list[str]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise _bad(key, value, "a list of non-empty strings")
    return value


def _path(text: str, key: str, home: Path) -> Path:
    path = Path(text).expanduser() if not text.startswith("~") else home / text[1:].lstrip("/\\")
    if not path.is_absolute():
        raise _bad(key, text, "an absolute path (or one starting with ~)")
    if "\0" in text or "\n" in text:
        raise _bad(key, text, "a path without control characters")
    return path


def policy_from_config(config: dict[str, Any], *, home: Path, data_dir: Path) -> SnapshotPolicy:
    """Return the policy of the agent configuration ``config`` (its ``[snapshots]`` table) over the defaults.

    ``home`` is what ``~`` and the default path mean; ``data_dir`` is the
    agent's data folder, where the local repository lives unless configured.
    Raise ConfigError naming the key of the first bad value.
    """
    section = config.get("snapshots", {})
    if not isinstance(section, dict):
        raise ConfigError("[snapshots] in the agent configuration must be a table",
                          hint="write it as a [snapshots] section in agent.toml")
    unknown = sorted(set(section) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"[snapshots] in the agent configuration has unknown keys: {', '.join(unknown)}",
                          hint="check their spelling in agent.toml")
    try:
        paths = tuple(_path(text, "paths", home) for text in (_strings(section, "paths") or ["~"]))
        excludes = [*(DEFAULT_EXCLUDES if _bool(section, "default_excludes", True) else ()),
                    *_strings(section, "exclude")]
        if any("\0" in item or "\n" in item for item in excludes):
            raise _bad("exclude", section.get("exclude"), "a list of patterns without control characters")
        retention_counts = {name: _count(section, f"keep_{name}", default)
                            for name, default in (("hourly", 24), ("daily", 7), ("weekly", 4), ("monthly", None))}
        if all(value is None for value in retention_counts.values()):
            raise _bad("keep_hourly", 0, "zero when every other keep_* is zero too: a policy must keep something")
        local = _bool(section, "local", True)
        local_repository = None
        if local:
            configured = section.get("local_repository")
            if configured is None:
                local_repository = data_dir / "snapshots" / "repository"
            elif isinstance(configured, str) and configured.strip():
                local_repository = _path(configured, "local_repository", home)
            else:
                raise _bad("local_repository", configured, "an absolute path")
        server = _bool(section, "server", True)
        if local_repository is None and not server:
            raise ConfigError("[snapshots] keeps neither a local nor a server repository",
                              hint="set local = true or server = true in agent.toml")
        interval = parse_duration(section.get("interval", "1h"), "interval")
        retry_after = min(parse_duration(section.get("retry_after", "15m"), "retry_after"), interval)
        verify_files = _count(section, "verify_files", 20)
        if verify_files is None:
            raise _bad("verify_files", section.get("verify_files"), "a whole number of at least 1")
        max_size = section.get("local_max_size")
        policy = SnapshotPolicy(
            paths=paths,
            excludes=tuple(dict.fromkeys(excludes)),
            one_file_system=_bool(section, "one_file_system", False),
            interval=interval,
            retention=Retention(**retention_counts),
            enabled=_bool(section, "enabled", True),
            local_repository=local_repository,
            server=server,
            local_max_size=None if max_size is None else parse_size(max_size, "local_max_size"),
            free_space_margin=parse_size(section.get("free_space_margin", "2G"), "free_space_margin"),
            wait_on_battery=_bool(section, "wait_on_battery", True),
            forget_every=parse_duration(section.get("forget_every", "1d"), "forget_every"),
            prune_every=parse_duration(section.get("prune_every", "7d"), "prune_every"),
            check_every=parse_duration(section.get("check_every", "7d"), "check_every"),
            verify_every=parse_duration(section.get("verify_every", "3d"), "verify_every"),
            verify_files=verify_files,
            verify_bytes=parse_size(section.get("verify_bytes", "200M"), "verify_bytes"),
            retry_after=retry_after,
        )
    except ConfigError:
        raise
    except HelplineError as exc:  # e.g. the retention's own checks
        raise ConfigError(f"[snapshots] in the agent configuration: {exc.message}", hint=exc.hint) from None
    return policy


def load_policy(*, home: Path | None = None, data_dir: Path | None = None,
                group_section: dict[str, Any] | None = None) -> SnapshotPolicy:
    """Return this PC's policy from its agent configuration files under its group policy (ConfigError for a bad one).

    Each key the group policy (agent.group_policy, kept in ``data_dir``) sets
    wins over the same key in agent.toml; ``group_section`` checks a group
    policy before it is kept.
    """
    from agent.config import load_agent_config
    from agent.group_policy import snapshot_section
    from agent.paths import agent_dir

    data_dir = data_dir or agent_dir()
    config = load_agent_config()
    group = snapshot_section(data_dir) if group_section is None else group_section
    if group:
        own = config.get("snapshots", {})
        config = {**config, "snapshots": {**(own if isinstance(own, dict) else {}), **group}}
    return policy_from_config(config, home=home or Path.home(), data_dir=data_dir)
