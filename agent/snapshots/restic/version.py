"""Which restic this is and what it can do: Debian 12's 0.14 and anything newer.

The wrapper builds its argv and reads its results by :class:`Features`, so a
newer restic's exit codes, ``--retry-lock`` and restore progress are used when
present and 0.14 is handled from its stderr otherwise. Versions are detected
once per binary (its path, inode, size, modification and change times): once
per process, and once for all of an agent's commands when they name a file to
remember it in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

from protocol.errors import ConfigError

from ... import execute

#: The oldest restic the wrapper supports (Debian 12).
MINIMUM = (0, 14, 0)
#: Seconds ``restic version`` may take.
VERSION_TIMEOUT = 30.0

_VERSION_LINE = re.compile(r"^restic (\d+)\.(\d+)\.(\d+)(\S*)")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A restic release number; ``suffix`` keeps a build's tag such as ``-dev``."""

    major: int
    minor: int
    patch: int
    suffix: str = ""

    def _key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """True if this release is ``major.minor.patch`` or newer."""
        return self._key() >= (major, minor, patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}{self.suffix}"


@dataclass(frozen=True)
class Features:
    """What a restic release offers beyond 0.14, the oldest we support."""

    #: ``--retry-lock DURATION``: restic waits for a lock itself (0.16).
    retry_lock: bool
    #: Exit codes 10 (no repository), 11 (locked) and 12 (wrong password) (0.17).
    exit_codes: bool
    #: ``restore --json`` prints status and summary lines (0.17); before, restore reports in text only.
    restore_json: bool

    @classmethod
    def of(cls, version: Version) -> Features:
        """Return the features of ``version``."""
        return cls(
            retry_lock=version.at_least(0, 16),
            exit_codes=version.at_least(0, 17),
            restore_json=version.at_least(0, 17),
        )


@dataclass(frozen=True)
class Restic:
    """One restic binary: the program to run and its version."""

    program: str
    version: Version

    @property
    def features(self) -> Features:
        return Features.of(self.version)


def parse_version(text: str) -> Version:
    """Return the version in ``restic version`` output; raise ConfigError if there is none or it is too old."""
    for line in text.splitlines():
        found = _VERSION_LINE.match(line.strip())
        if found:
            major, minor, patch, suffix = found.groups()
            version = Version(int(major), int(minor), int(patch), suffix)
            if version._key() < MINIMUM:
                raise ConfigError(
                    f"restic {version} is too old for Helpline",
                    hint=f"install restic {'.'.join(map(str, MINIMUM))} or newer",
                )
            return version
    first = text.strip().splitlines()[0] if text.strip() else "nothing"
    raise ConfigError(f"could not read restic's version from {first[:200]!r}",
                      hint="check that the restic program is the real restic")


_cache: dict[tuple[str, int, int, int, int], Restic] = {}
_cache_lock = threading.Lock()


def _remembered(path: Path | None, key: tuple) -> Version | None:
    """The version kept in ``path`` for the binary ``key`` names; None if none is, or it is for another binary."""
    if path is None:
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("binary") == list(key):
            return parse_version(str(kept["version"]))
    except (OSError, ValueError, KeyError, AttributeError, ConfigError):
        pass  # unreadable, damaged or stale: ask restic again
    return None


def _remember(path: Path | None, key: tuple, output: str) -> None:
    if path is None:
        return
    from agent.paths import write_private

    try:
        write_private(path, json.dumps({"binary": list(key), "version": output[:4096]}).encode())
    except OSError:
        pass  # not remembered: the next command asks restic again


def detect(program: str | os.PathLike = "restic", *, timeout: float = VERSION_TIMEOUT,
           remember_in: Path | None = None) -> Restic:
    """Return the restic that ``program`` names, with its version; detected once per binary file.

    ``remember_in`` is a file (in the agent's private folder) where the version
    is kept for the next process, so a command starts restic's real work
    without a ``restic version`` run first; a binary replaced or updated in
    place is asked again (its inode, size or times differ).
    Raise ConfigError if restic is not installed, does not answer or is older than 0.14.
    """
    found = shutil.which(str(program))
    if found is None:
        raise ConfigError(f"restic is not installed ({program} was not found)",
                          hint="install restic 0.14 or newer, or set the path of the restic program")
    path = str(Path(found).resolve())
    stat = os.stat(path)
    key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    version = _remembered(remember_in, key)
    if version is None:
        lines: list[str] = []
        done = execute.run((path, "version"), timeout=timeout, on_line=lines.append, max_bytes=64 * 1024)
        done.check()
        version = parse_version("\n".join(lines))
        _remember(remember_in, key, "\n".join(lines))
    restic = Restic(path, version)
    with _cache_lock:
        _cache[key] = restic
    return restic
