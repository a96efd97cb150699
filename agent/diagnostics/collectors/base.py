"""The shape every collector takes, and the small readers collectors share.

A collector is declarative, like a sos plugin: it says what it is (``name``,
``category``, ``description``), where it runs (``platforms``, :meth:`applies`),
how long it may take (``timeout``) and which paths it must never read
(``forbidden_paths``); its :meth:`collect` writes raw files through the context
and returns normalised facts. It never redacts: that happens after collection.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ..context import CollectContext
from ..model import Item, ItemStatus
from agent.regexes import rx

ALL_PLATFORMS = frozenset({"linux", "windows", "darwin"})

#: Paths no collector ever reads, whatever an admin's log globs say: secrets,
#: private keys, password stores, browser profiles (cookies, saved logins).
COMMON_FORBIDDEN_PATHS: tuple[str, ...] = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd",
    "/etc/ssh/ssh_host_*_key", "/etc/ssl/private/*", "/etc/sudoers.d/*",
    "~/.ssh/id_*", "~/.ssh/*_key", "~/.gnupg/*", "~/.password-store/*",
    "~/.aws/credentials", "~/.azure/*", "~/.config/gcloud/*", "~/.kube/config",
    "~/.netrc", "~/.git-credentials", "~/.docker/config.json", "~/.pgpass",
    "~/.mozilla/*", "~/.thunderbird/*", "~/.config/google-chrome/*", "~/.config/chromium/*",
    "~/.config/BraveSoftware/*", "~/.config/microsoft-edge/*", "~/snap/firefox/*",
    "~/Library/Keychains/*", "~/Library/Cookies/*", "~/Library/Application Support/Google/Chrome/*",
    "~/Library/Application Support/Firefox/*", "~/Library/Safari/*",
    "*/AppData/Local/Google/Chrome/User Data/*", "*/AppData/Local/Microsoft/Edge/User Data/*",
    "*/AppData/Roaming/Mozilla/Firefox/*", "*/AppData/Roaming/Microsoft/Credentials/*",
    "*/AppData/Roaming/Microsoft/Protect/*", "*/Windows/System32/config/*",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.ovpn",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519",
)


class Collector:
    """One kind of facts about a PC; subclasses fill the class attributes and one collect method per platform.

    The default :meth:`collect` dispatches to ``collect_linux``,
    ``collect_windows`` or ``collect_darwin``; a collector that works the same
    everywhere (through psutil) overrides :meth:`collect` itself.
    """

    name: ClassVar[str] = ""
    category: ClassVar[str] = ""
    description: ClassVar[str] = ""
    platforms: ClassVar[frozenset[str]] = frozenset()
    #: The longest this collector may run, in seconds (the run's collector_timeout caps it).
    timeout: ClassVar[float] = 0.0
    forbidden_paths: ClassVar[tuple[str, ...]] = COMMON_FORBIDDEN_PATHS

    def applies(self, ctx: CollectContext) -> bool:
        """Say whether this collector runs on the context's PC; by default, on its platforms."""
        return ctx.platform in self.platforms

    def collect(self, ctx: CollectContext) -> dict[str, Any]:
        """Gather raw files through ``ctx`` and return normalised, JSON-serialisable facts."""
        method = getattr(self, f"collect_{ctx.platform}", None)
        if method is None:
            raise TypeError(f"{self.name} has no collector for {ctx.platform}")
        return method(ctx)

    def effective_timeout(self, collector_timeout: float) -> float:
        """Return the seconds this collector gets: its own budget, capped by the run's option."""
        return min(self.timeout, collector_timeout) if self.timeout > 0 else collector_timeout

    def __repr__(self) -> str:
        return f"<collector {self.name}>"


def powershell(script: str) -> tuple[str, ...]:
    """Return the argv that runs ``script`` in Windows PowerShell with UTF-8 output and no profile."""
    prelude = "$ProgressPreference='SilentlyContinue'; [Console]::OutputEncoding=[System.Text.Encoding]::UTF8; "
    return ("powershell.exe", "-NoLogo", "-NoProfile", "-NonInteractive", "-Command", prelude + script)


def produced_output(item: Item) -> bool:
    """True when the item's command or copy left a file worth parsing."""
    return item.status in (ItemStatus.OK, ItemStatus.TRUNCATED, ItemStatus.ERROR, ItemStatus.TIMEOUT) and item.size > 0


def read_text(ctx: CollectContext, item: Item, limit: int = 8 * 1024 * 1024) -> str | None:
    """Return the text of an item's staged file (at most ``limit`` bytes), or None if it has none."""
    if not produced_output(item):
        return None
    with open(ctx.path(item.path), "rb") as handle:
        data = handle.read(limit)
    return data.decode("utf-8-sig", errors="replace")


def read_json(ctx: CollectContext, item: Item) -> Any:
    """Return the parsed JSON of an item's staged file, or None if it is absent, cut short or not JSON."""
    if item.status not in (ItemStatus.OK, ItemStatus.ERROR):
        return None
    text = read_text(ctx, item)
    if not text or not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def iter_lines(ctx: CollectContext, item: Item) -> Iterator[str]:
    """Yield the lines of an item's staged file one by one, without loading it whole."""
    if not produced_output(item):
        return
    with open(ctx.path(item.path), encoding="utf-8", errors="replace") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


def as_list(value: Any) -> list:
    """PowerShell's ConvertTo-Json writes one object bare and several as a list: always return a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_PS_DATE = rx(r"^/Date\((-?\d+)\)/$")


def parse_timestamp(value: Any) -> datetime | None:
    """Parse the timestamps command outputs carry (ISO 8601, PowerShell's ``/Date(ms)/``) into aware UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    match = _PS_DATE.match(text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=timezone.utc)
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # .NET writes 7 fractional digits
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def iso_utc(timestamp: float | None) -> str | None:
    """Return a POSIX timestamp as ISO 8601 UTC, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")


def systemd_booted() -> bool:
    """True when systemd is PID 1 (the check sd_booted(3) makes); systemctl is useless otherwise."""
    return os.path.isdir("/run/systemd/system")


def init_process_name() -> str | None:
    """Return the name of PID 1 on Linux, to say what manages services when systemd does not."""
    try:
        return Path("/proc/1/comm").read_text().strip() or None
    except OSError:
        return None


def slug(text: str, limit: int = 80) -> str:
    """Return ``text`` reduced to characters safe in a staging file name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"
    return cleaned[:limit]


def listing(directory: Path, patterns: tuple[str, ...] = ("*",)) -> list[dict[str, Any]]:
    """List the regular files of ``directory`` matching ``patterns``: name, size, mtime; newest first.

    Never opens the files, so it is safe for core dumps of any size.
    """
    entries = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not any(Path(entry.name).match(pattern) for pattern in patterns):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if not entry.is_file(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                entries.append({
                    "name": entry.name,
                    "path": str(Path(directory) / entry.name),
                    "size": info.st_size,
                    "modified": iso_utc(info.st_mtime),
                    "mtime": info.st_mtime,
                })
    except OSError:
        return []
    entries.sort(key=lambda entry: entry["mtime"], reverse=True)
    return entries


def parse_colon_pairs(text: str) -> dict[str, str]:
    """Parse ``Key:   value`` lines (lscpu, ``route -n get default``) into a dict."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values
