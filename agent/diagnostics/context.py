"""What a collector works with: the options of the run, the staging directory, the clock.

A :class:`CollectContext` gives collectors four ways to produce items —
:meth:`~CollectContext.run`, :meth:`~CollectContext.copy_file`,
:meth:`~CollectContext.write_json`, :meth:`~CollectContext.write_text` (plus
:meth:`~CollectContext.write_lines` for filtered logs) — and each one records an
:class:`~agent.diagnostics.model.Item`, confines its file to the staging
directory, respects the collector's forbidden paths and never outlives the
deadline. The command runner, ``which``, the environment and the home folder are
pluggable, so Windows and macOS collectors are tested on Linux against recorded
outputs.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shlex
import shutil
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import date, datetime, timezone
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from agent.redaction import Redactor
from protocol.errors import ConfigError, HelplineError, InvalidInputError

from .cpu_sample import CpuSample
from .model import Item, ItemKind, ItemStatus
from .runner import CommandResult, run_command

PLATFORMS = ("linux", "windows", "darwin")
MIB = 1024 * 1024
#: For tests and demonstrations only: a directory of recorded outputs laid out like the staging
#: directory. A command or file copy whose staging path has a file there is answered from that
#: file instead of the PC (see :meth:`CollectContext.recorded`); nothing else changes.
RECORDED_OUTPUTS_ENV = "HELPLINE_DIAG_FIXTURES"

#: Environment variables worth showing an engineer; values are written as they
#: are (proxy URLs may carry credentials: the redactor downstream scrubs them).
DEFAULT_ENV_ALLOWLIST: tuple[str, ...] = (
    "LANG", "LANGUAGE", "LC_*", "TZ", "PATH", "SHELL", "TERM", "DISPLAY",
    "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "XDG_CURRENT_DESKTOP", "XDG_SESSION_DESKTOP",
    "DESKTOP_SESSION", "HOME", "USER", "LOGNAME",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "FTP_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "ftp_proxy",
    # Windows
    "USERNAME", "USERDOMAIN", "COMPUTERNAME", "USERPROFILE", "APPDATA", "LOCALAPPDATA",
    "PROGRAMDATA", "TEMP", "TMP", "OS", "PROCESSOR_ARCHITECTURE", "NUMBER_OF_PROCESSORS",
    "SYSTEMROOT", "PATHEXT", "COMSPEC",
    # macOS
    "TMPDIR", "__CF_USER_TEXT_ENCODING",
)


def expand_home(pattern: str, home: Path) -> str:
    """``pattern`` with a leading ``~`` (alone, or before a separator) replaced by ``home``."""
    if pattern == "~" or pattern.startswith(("~/", "~\\")):
        return str(home) + pattern[1:]
    return pattern


@dataclass
class CollectOptions:
    """What an admin (or the user) can tune about a diagnostics run.

    Checked when made: a value of the wrong type or out of range raises
    :class:`InvalidSetting` naming the setting (:meth:`from_config` turns it into
    a ConfigError). A plain class, not a schema model: every share makes one, and
    the model library's import alone cost a tenth of a share's start-up.
    """

    server_url: str | None = None
    #: ``host`` or ``host:port`` (``[v6addr]:port`` for IPv6); port 443 when absent.
    reachability_hosts: list[str] = field(default_factory=list)
    #: Application name -> argv that prints its version, e.g. ``{"git": ["git", "--version"]}``.
    app_versions: dict[str, list[str]] = field(default_factory=dict)
    #: Extra log files to copy; ``~`` and ``**`` are expanded.
    log_globs: list[str] = field(default_factory=list)
    #: Hours of logs to keep (more than 0, at most 90 days).
    log_since_hours: float = 24.0
    #: Cap per log file (at least 4096); the first quarter and the last three quarters are kept.
    log_max_bytes: int = 2 * MIB
    env_allowlist: list[str] = field(default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST))
    #: Seconds one collector may take.
    collector_timeout: float = 10.0
    #: Seconds the whole collection may take; collect() returns by then.
    deadline: float = 20.0
    #: Cap on the stdout kept from any one command (at least 4096).
    command_max_bytes: int = 4 * MIB
    #: Run only collectors of these categories (None: all).
    categories: set[str] | None = None
    #: Collectors (by name or category) not to run.
    exclude: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.server_url is not None and not isinstance(self.server_url, str):
            raise InvalidSetting("server_url", "must be text")
        for name in ("reachability_hosts", "log_globs", "env_allowlist"):
            setattr(self, name, _texts(name, getattr(self, name), list))
        self.exclude = _texts("exclude", self.exclude, set)
        if self.categories is not None:
            self.categories = _texts("categories", self.categories, set)
        if not isinstance(self.app_versions, Mapping):
            raise InvalidSetting("app_versions", "must be a table of application name -> command")
        versions: dict[str, list[str]] = {}
        for name, argv in self.app_versions.items():
            where = f"app_versions.{name}"
            argv = _texts(where, argv, list) if isinstance(argv, (list, tuple)) else argv
            if not isinstance(name, str) or not isinstance(argv, list) or not argv or not argv[0]:
                raise InvalidSetting(where, f"needs a command, e.g. [{name!r}, '--version']")
            versions[name] = argv
        self.app_versions = versions
        self.log_since_hours = _number("log_since_hours", self.log_since_hours, float, above=0, at_most=24 * 90)
        self.log_max_bytes = _number("log_max_bytes", self.log_max_bytes, int, at_least=4096)
        self.collector_timeout = _number("collector_timeout", self.collector_timeout, float, above=0)
        self.deadline = _number("deadline", self.deadline, float, above=0)
        self.command_max_bytes = _number("command_max_bytes", self.command_max_bytes, int, at_least=4096)

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> CollectOptions:
        """Build options from configuration data; raise ConfigError naming the first bad field."""
        known = {f.name for f in fields(cls)}
        try:
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                raise InvalidSetting(unknown[0], "is not a diagnostics setting")
            return cls(**dict(data))
        except InvalidSetting as exc:
            raise ConfigError(
                f"invalid diagnostics setting {exc.setting}: {exc.problem}",
                hint="fix the diagnostics section of the agent configuration",
            ) from None


class InvalidSetting(ValueError):
    """A diagnostics setting of the wrong type or out of range."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem


def _texts(setting: str, value: Any, kind: type) -> Any:
    """``value`` as a ``kind`` (list or set) of strings; InvalidSetting if it is not a list of text."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)) \
            or not all(isinstance(item, str) for item in value):
        raise InvalidSetting(setting, "must be a list of text")
    return kind(value)


def _number(setting: str, value: Any, kind: type, *, above: float | None = None, at_least: float | None = None,
            at_most: float | None = None) -> Any:
    """``value`` as an int or float within its bounds; InvalidSetting otherwise (a float for an int only if whole)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (kind is int and value != int(value)):
        raise InvalidSetting(setting, "must be a whole number" if kind is int else "must be a number")
    value = kind(value)
    if above is not None and not value > above:
        raise InvalidSetting(setting, f"must be greater than {above:g}")
    if at_least is not None and value < at_least:
        raise InvalidSetting(setting, f"must be at least {at_least:g}")
    if at_most is not None and value > at_most:
        raise InvalidSetting(setting, f"must be at most {at_most:g}")
    return value


class CommandRunner(Protocol):
    """The signature of :func:`agent.diagnostics.runner.run_command`, which tests replace."""

    def __call__(
        self, argv: Sequence[str], dest: Path, *, timeout: float, max_bytes: int,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...


class CollectionClosed(HelplineError):
    """Raised inside a collector that outlived its deadline: its results were already reported."""


def current_platform() -> str:
    """Return ``linux``, ``windows`` or ``darwin`` for this PC; raise InvalidInputError elsewhere."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    raise InvalidInputError(
        f"diagnostics do not support this operating system ({sys.platform})",
        hint="Helpline diagnostics run on Linux, Windows and macOS",
    )


#: The marker written where the middle of a capped file was left out.
OMISSION_MARKER = "[... helpline: {omitted} bytes omitted here; kept the first {head} and the last {tail} bytes ...]\n"
_MARKER_RESERVE = 160  # bytes set aside for the marker when budgeting a cap
_HEAD_FRACTION = 0.25
_COPY_CHUNK = 256 * 1024
_MIN_TIME_LEFT = 0.05  # below this, starting a command is pointless


class CollectContext:
    """The staging directory, options, deadline and tools one collection (or one collector) uses.

    :func:`agent.diagnostics.collect.collect` makes one root context and gives
    each collector its own with :meth:`for_collector`, which tightens the
    deadline, fixes the category and the forbidden paths, and keeps the items.
    """

    def __init__(
        self,
        out_dir: Path,
        platform: str,
        options: CollectOptions,
        *,
        deadline: float | None = None,
        command_runner: CommandRunner | None = None,
        which: Callable[[str], str | None] | None = None,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
        category: str | None = None,
        forbidden_paths: Sequence[str] = (),
        redactor: Redactor | None = None,
        redaction_lock: threading.Lock | None = None,
        now: datetime | None = None,
        cpu_sample: CpuSample | None = None,
        last_one: threading.Event | None = None,
        out_dir_resolved: bool = False,
    ):
        if platform not in PLATFORMS:
            raise InvalidInputError(f"unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}")
        # A collector's context gets its root's folder, resolved already (resolving walks every folder from /).
        self.out_dir = Path(out_dir) if out_dir_resolved else Path(out_dir).resolve()
        self.platform = platform
        self.options = options
        #: The absolute :func:`time.monotonic` time by which this context's work must end.
        self.deadline = deadline if deadline is not None else time.monotonic() + options.deadline
        self.command_runner: CommandRunner = command_runner or run_command
        self.which: Callable[[str], str | None] = which or shutil.which
        self.env: Mapping[str, str] = dict(os.environ) if env is None else dict(env)
        self.home = Path(home) if home is not None else Path.home()
        self.category = category
        self.forbidden_paths = tuple(forbidden_paths)
        #: The wall-clock time "the last hours" (of logs, of crash reports) and uptimes are measured from.
        self.now = now if now is not None else datetime.now(timezone.utc)
        #: The first CPU reading, taken when the share began (None: the processes collector takes its own).
        self.cpu_sample = cpu_sample
        #: Set by the run once at most one of its collectors still works (the processes collector then stops
        #: measuring CPU use at its shortest interval). Shared by every context made from this one.
        self.last_one = last_one if last_one is not None else threading.Event()
        #: Redacts the few values a collector derives from raw text (see :meth:`redact_text`); secrets only by default.
        self.redactor = redactor if redactor is not None else Redactor()
        # One lock per redactor (it is not thread-safe), shared by every context made from this one.
        self._redaction_lock = redaction_lock or threading.Lock()
        self._items: list[Item] = []
        self._lock = threading.Lock()
        self._closed = False
        recorded = self.env.get(RECORDED_OUTPUTS_ENV)
        self.recorded_root = Path(recorded) if recorded else None

    # -- lifecycle -----------------------------------------------------------------

    def for_collector(self, category: str, timeout: float, forbidden_paths: Sequence[str]) -> CollectContext:
        """Return a context for one collector: its own items, ``timeout`` seconds from now at most."""
        return CollectContext(
            self.out_dir, self.platform, self.options,
            deadline=min(self.deadline, time.monotonic() + timeout),
            command_runner=self.command_runner, which=self.which, env=self.env, home=self.home,
            category=category, forbidden_paths=forbidden_paths, redactor=self.redactor,
            redaction_lock=self._redaction_lock, now=self.now, cpu_sample=self.cpu_sample,
            last_one=self.last_one, out_dir_resolved=True,
        )

    @property
    def redaction_lock(self) -> threading.Lock:
        """The lock every use of this collection's redactor holds (it is not thread-safe)."""
        return self._redaction_lock

    def remaining(self) -> float:
        """Seconds left before this context's deadline (negative once passed)."""
        return self.deadline - time.monotonic()

    def close(self) -> list[Item]:
        """Stop accepting items and return those recorded so far; later writes raise CollectionClosed."""
        with self._lock:
            self._closed = True
            items = list(self._items)
        with self._redaction_lock:
            pass  # a redaction under way ends before close() returns, and none starts after it
        return items

    @property
    def items(self) -> list[Item]:
        """A copy of the items recorded so far."""
        with self._lock:
            return list(self._items)

    def record_replace(self, item: Item, source: str) -> Item:
        """Restate the last recorded ``item`` as coming from ``source`` (a command answered from a recording)."""
        return self._restate(item, source=source, note=f"recorded output ({RECORDED_OUTPUTS_ENV})")

    def keep_only(self, item: Item, text: str, note: str) -> Item:
        """Replace what ``item``'s staged file holds with ``text``, the part of it that matters, saying so in ``note``."""
        self._check_open()
        data = text.encode("utf-8", errors="replace")
        self.path(item.path).write_bytes(data)
        return self._restate(item, size=len(data), note=note)

    def _restate(self, item: Item, *, note: str, source: str | None = None, size: int | None = None) -> Item:
        restated = Item(item.path, item.category, item.source if source is None else source, item.kind, item.status,
                        item.duration, item.size if size is None else size, item.exit_code,
                        "; ".join(filter(None, [item.note, note])))
        with self._lock:
            if self._closed:
                raise CollectionClosed(f"{self.category or 'collection'} ran past its deadline")
            self._items[self._items.index(item)] = restated
        return restated

    def record(self, item: Item) -> Item:
        """Add an item to this context's list; raise CollectionClosed once the context is closed."""
        with self._lock:
            if self._closed:
                raise CollectionClosed(f"{self.category or 'collection'} ran past its deadline")
            self._items.append(item)
        return item

    def redact_text(self, text: str) -> str:
        """Return ``text`` redacted by the bundle's redactor; raise CollectionClosed once the context is closed.

        Staged files are redacted when the bundle is built, but a value a
        collector *derives* from raw text (a normalised log line, where digits
        become ``<n>``) can hide a secret from the detectors; such text is
        redacted here, before it is derived.
        """
        with self._redaction_lock:
            self._check_open()
            redacted, _ = self.redactor.redact_text(text)
            return redacted

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionClosed(f"{self.category or 'collection'} ran past its deadline")

    # -- paths ---------------------------------------------------------------------

    def path(self, relpath: str) -> Path:
        """Return the staging path for ``relpath``; raise InvalidInputError if it would leave the staging dir."""
        if not relpath or "\\" in relpath or ":" in relpath:
            raise InvalidInputError(f"bad staging path {relpath!r}: use a relative POSIX path")
        pure = PurePosixPath(relpath)
        if pure.is_absolute() or any(part in ("..", ".", "") for part in relpath.split("/")):
            raise InvalidInputError(f"bad staging path {relpath!r}: absolute paths and '..' are refused")
        if self.category and pure.parts[0] != self.category:
            raise InvalidInputError(f"bad staging path {relpath!r}: {self.category} items go under {self.category}/")
        target = self.out_dir.joinpath(*pure.parts)
        # A symlink planted inside the staging dir must not lead a write outside it. The staging dir is
        # resolved already and the parts hold no "..": the folders below it are all that can lead away
        # (one lstat each, where resolving the whole path took one for every folder from the root).
        folder = self.out_dir
        for part in pure.parts[:-1]:
            folder = folder / part
            if os.path.islink(folder):
                raise InvalidInputError(f"bad staging path {relpath!r}: it leaves the staging directory")
        return target

    def recorded(self, relpath: str) -> Path | None:
        """Return the recorded output standing in for ``relpath`` (see :data:`RECORDED_OUTPUTS_ENV`), or None."""
        if self.recorded_root is None:
            return None
        candidate = self.recorded_root.joinpath(*PurePosixPath(relpath).parts)
        return candidate if candidate.is_file() else None

    def available(self, relpath: str, program: str) -> bool:
        """Say whether ``program`` can fill ``relpath``: it is on PATH, or a recorded output stands in for it."""
        return self.recorded(relpath) is not None or self.which(program) is not None

    def expand_user(self, pattern: str) -> str:
        """Expand a leading ``~`` with this context's home folder (pluggable for tests)."""
        return expand_home(pattern, self.home)

    def forbidden_match(self, src: str | os.PathLike) -> str | None:
        """Return the forbidden-path pattern ``src`` (or what it links to) matches, or None."""
        fold = self.platform in ("windows", "darwin")  # case-insensitive file systems
        candidates = {_norm(os.fspath(src), fold)}
        try:
            candidates.add(_norm(os.path.realpath(src), fold))
        except OSError:
            pass
        for pattern in self.forbidden_paths:
            expanded = _norm(self.expand_user(pattern), fold)
            for candidate in candidates:
                subject = candidate.rsplit("/", 1)[-1] if "/" not in expanded else candidate
                if fnmatch.fnmatchcase(subject, expanded):
                    return pattern
        return None

    # -- producing items -----------------------------------------------------------

    def note(self, relpath: str, source: str, status: ItemStatus, note: str, *, kind: ItemKind = ItemKind.COMMAND) -> Item:
        """Record an item that produced no file (not found, skipped, denied) with the reason."""
        self.path(relpath)
        return self.record(Item(relpath, self.category or "", source, kind, status, note=note))

    def execute(
        self,
        relpath: str,
        argv: Sequence[str],
        timeout: float | None = None,
        *,
        kind: ItemKind = ItemKind.COMMAND,
        max_bytes: int | None = None,
        env: Mapping[str, str] | None = None,
        ok_codes: Container[int] = (0,),
    ) -> tuple[Item, CommandResult | None]:
        """Run ``argv`` into ``relpath`` and return the item and the runner's result (None if not run).

        ``ok_codes`` lists exit statuses that mean success for this command (for
        example 1 for "nothing found"), so they are not reported as errors.
        """
        self._check_open()
        dest = self.path(relpath)
        source = shlex.join(argv)
        recorded = self.recorded(relpath)
        if recorded is not None:
            item = self.copy_file(relpath, recorded, max_bytes, kind=kind)
            return self.record_replace(item, source), None
        left = self.remaining()
        if left < _MIN_TIME_LEFT:
            return self.note(relpath, source, ItemStatus.SKIPPED, "no time left before the deadline", kind=kind), None
        limit = left if timeout is None else min(timeout, left)
        result = self.command_runner(
            tuple(argv), dest, timeout=limit,
            max_bytes=self.options.command_max_bytes if max_bytes is None else max_bytes, env=env,
        )
        status, note = result.status, result.note
        if status is ItemStatus.ERROR and result.exit_code in ok_codes:
            status = ItemStatus.TRUNCATED if result.truncated else ItemStatus.OK
        if result.status in (ItemStatus.ERROR, ItemStatus.DENIED, ItemStatus.TIMEOUT) and result.stderr_tail.strip():
            last_lines = result.stderr_tail.strip().splitlines()[-3:]
            note = "; ".join(filter(None, [note, "stderr: " + " | ".join(last_lines)[-500:]]))
        item = Item(
            relpath, self.category or "", source, kind, status,
            duration=result.duration, size=result.size, exit_code=result.exit_code, note=note,
        )
        return self.record(item), result

    def run(
        self,
        relpath: str,
        argv: Sequence[str],
        timeout: float | None = None,
        *,
        kind: ItemKind = ItemKind.COMMAND,
        max_bytes: int | None = None,
        ok_codes: Container[int] = (0,),
    ) -> Item:
        """Run ``argv`` (timeout clamped to the time left), its stdout streamed into ``relpath``."""
        return self.execute(relpath, argv, timeout, kind=kind, max_bytes=max_bytes, ok_codes=ok_codes)[0]

    def write_json(self, relpath: str, obj: Any, *, source: str = "python", kind: ItemKind = ItemKind.FACTS) -> Item:
        """Write ``obj`` as indented JSON; raise TypeError if it holds something JSON cannot carry."""
        return self.write_text(relpath, json.dumps(obj, indent=2, ensure_ascii=False, default=json_default) + "\n",
                               source=source, kind=kind)

    def write_text(self, relpath: str, text: str, *, source: str = "python", kind: ItemKind = ItemKind.FACTS) -> Item:
        """Write ``text`` (UTF-8) into ``relpath``."""
        self._check_open()
        started = time.monotonic()
        dest = self.path(relpath)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8", errors="replace")
        dest.write_bytes(data)
        return self.record(Item(relpath, self.category or "", source, kind, ItemStatus.OK,
                                duration=time.monotonic() - started, size=len(data)))

    def copy_file(
        self,
        relpath: str,
        src: str | os.PathLike,
        max_bytes: int | None = None,
        head_tail: bool = True,
        *,
        kind: ItemKind = ItemKind.FILE,
    ) -> Item:
        """Copy ``src`` into ``relpath``, at most ``max_bytes`` (default: the command cap).

        A larger file keeps its first quarter and its last three quarters, cut at
        line boundaries, with a marker line between (or only its head when
        ``head_tail`` is False). Forbidden paths are ``skipped``; missing files
        ``not_found``; unreadable ones ``denied``; FIFOs and devices are never opened.
        """
        self._check_open()
        cap = self.options.command_max_bytes if max_bytes is None else max_bytes
        source = os.fspath(src)
        src = self.recorded(relpath) or src
        dest = self.path(relpath)
        started = time.monotonic()

        def finish(status: ItemStatus, size: int = 0, note: str | None = None) -> Item:
            return self.record(Item(relpath, self.category or "", source, kind, status,
                                    duration=time.monotonic() - started, size=size, note=note))

        pattern = self.forbidden_match(src)
        if pattern is not None:
            return finish(ItemStatus.SKIPPED, note=f"forbidden path (matches {pattern}); never read")
        try:
            # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
            fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    return finish(ItemStatus.SKIPPED, note="not a regular file")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as out:
                    written, note = _copy_capped(handle, out, info.st_size, cap, head_tail)
        except FileNotFoundError:
            return finish(ItemStatus.NOT_FOUND, note="no such file")
        except PermissionError as exc:
            dest.unlink(missing_ok=True)
            return finish(ItemStatus.DENIED, note=f"permission denied: {exc.strerror or exc}")
        except IsADirectoryError:
            return finish(ItemStatus.SKIPPED, note="a directory, not a file")
        except OSError as exc:
            return finish(ItemStatus.ERROR, size=dest.stat().st_size if dest.exists() else 0,
                          note=f"read failed: {exc.strerror or exc}")
        return finish(ItemStatus.TRUNCATED if note else ItemStatus.OK, size=written, note=note)

    def write_lines(
        self,
        relpath: str,
        lines: Iterable[str],
        *,
        source: str,
        max_bytes: int,
        kind: ItemKind = ItemKind.LOG,
    ) -> Item:
        """Stream ``lines`` into ``relpath`` keeping the first quarter and the last three quarters of ``max_bytes``.

        Memory stays bounded by the tail budget however long the input is; this
        is how a filtered system log of any size is kept.
        """
        self._check_open()
        dest = self.path(relpath)
        dest.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        writer = HeadTailWriter(dest, max_bytes)
        failure = None
        try:
            for line in lines:
                writer.add(line)
        except OSError as exc:
            failure = f"reading stopped: {exc.strerror or exc}"
        finally:
            written, note = writer.close()
        status = ItemStatus.ERROR if failure else ItemStatus.TRUNCATED if note else ItemStatus.OK
        return self.record(Item(relpath, self.category or "", source, kind, status,
                                duration=time.monotonic() - started, size=written,
                                note="; ".join(filter(None, [failure, note])) or None))


class HeadTailWriter:
    """Write lines to a file up to a cap, keeping the head and a rolling tail in bounded memory."""

    def __init__(self, dest: Path, max_bytes: int):
        budget = max(0, max_bytes - _MARKER_RESERVE)
        self.head_budget = int(budget * _HEAD_FRACTION)
        self.tail_budget = budget - self.head_budget
        self.out = open(dest, "wb")  # noqa: SIM115 - closed in close()
        self.head_written = 0
        self.head_full = False
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0
        self.omitted = 0
        self.total = 0

    def add(self, line: str) -> None:
        """Append one line: into the head while it has room, then into the rolling tail."""
        data = line.encode("utf-8", errors="replace")
        if not data.endswith(b"\n"):
            data += b"\n"
        self.total += len(data)
        if not self.head_full and self.head_written + len(data) <= self.head_budget:
            self.out.write(data)
            self.head_written += len(data)
            return
        self.head_full = True
        self.tail.append(data)
        self.tail_bytes += len(data)
        while self.tail_bytes > self.tail_budget and self.tail:
            dropped = self.tail.popleft()
            self.tail_bytes -= len(dropped)
            self.omitted += len(dropped)

    def close(self) -> tuple[int, str | None]:
        """Flush the tail (after a marker if anything was left out); return bytes written and a note."""
        note = None
        written = self.head_written
        try:
            if self.omitted:
                marker = OMISSION_MARKER.format(omitted=self.omitted, head=self.head_written, tail=self.tail_bytes)
                data = marker.encode()
                self.out.write(data)
                written += len(data)
                note = f"{self.total} bytes of lines; kept the first {self.head_written} and the last {self.tail_bytes}"
            for chunk in self.tail:
                self.out.write(chunk)
            written += self.tail_bytes
        finally:
            self.out.close()
        return written, note


def _copy_capped(handle, out, size: int, cap: int, head_tail: bool) -> tuple[int, str | None]:
    """Copy from ``handle`` to ``out`` within ``cap`` bytes; return bytes written and a note if cut."""
    budget = cap - _MARKER_RESERVE
    if size <= cap or not head_tail or budget < 1024:
        # Small file, head-only mode, or a file whose stat size lies (/proc): copy up to the cap.
        written = 0
        while written < cap:
            chunk = handle.read(min(_COPY_CHUNK, cap - written))
            if not chunk:
                return written, None
            out.write(chunk)
            written += len(chunk)
        if handle.read(1):
            return written, f"larger than {cap} bytes; kept the first {written}"
        return written, None

    head_budget = int(budget * _HEAD_FRACTION)
    tail_budget = budget - head_budget
    head = handle.read(head_budget)
    cut = head.rfind(b"\n")
    if cut >= 0:
        head = head[: cut + 1]  # whole lines only
    elif head:
        head += b"\n"
    handle.seek(max(size - tail_budget, len(head)))
    tail = handle.read(tail_budget)
    start = tail.find(b"\n")
    if 0 <= start < len(tail) - 1:
        tail = tail[start + 1:]  # start on a line boundary
    omitted = max(0, size - len(head) - len(tail))
    marker = OMISSION_MARKER.format(omitted=omitted, head=len(head), tail=len(tail)).encode()
    out.write(head)
    out.write(marker)
    out.write(tail)
    return len(head) + len(marker) + len(tail), f"{size} bytes; kept the first {len(head)} and the last {len(tail)}"


def _norm(path: str, fold: bool) -> str:
    path = path.replace("\\", "/")
    return path.lower() if fold else path


def json_default(value: Any) -> Any:
    """Turn the few non-JSON types facts commonly hold into JSON; raise TypeError for anything else."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, (Path, PurePosixPath)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
