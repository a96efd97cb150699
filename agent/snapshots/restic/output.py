"""Restic's ``--json`` output read into typed results: progress, summaries, snapshots, files, locks.

Readers are tolerant in one way only: fields a newer restic adds are ignored
and fields an older one lacks are None, but a line that claims to be a summary
and is not one raises, so a changed format fails loudly in tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocol.errors import InvalidInputError

from ...execute import Outcome

_RESTORING = re.compile(r"^restoring <Snapshot ([0-9a-f]{8,64}) of ")


def parse_time(text: str) -> datetime:
    """Return restic's RFC 3339 time (nanoseconds, ``Z`` or an offset) as an aware datetime."""
    found = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not found:
        raise InvalidInputError(f"restic printed a time Helpline cannot read: {text!r}")
    whole, fraction, zone = found.groups()
    fraction = (fraction or "")[:7]  # Python reads microseconds at most
    return datetime.fromisoformat(whole + fraction + ("+00:00" if zone == "Z" else zone))


def json_line(line: str) -> dict[str, Any] | None:
    """Return ``line`` as a JSON object, or None when it is not one (restic mixes text into some outputs)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Progress:
    """Where a running backup or restore is: ``percent`` from 0 to 100, files and bytes done of the total."""

    percent: float
    files_done: int
    total_files: int
    bytes_done: int
    total_bytes: int
    current_files: tuple[str, ...] = ()
    seconds_elapsed: float | None = None


@dataclass(frozen=True)
class BackupSummary:
    """What one backup made. ``outcome`` is WARNING when some files could not be read (restic's exit 3):
    the snapshot exists without them, and ``unreadable`` names them."""

    snapshot_id: str
    files_new: int
    files_changed: int
    files_unmodified: int
    dirs_new: int
    dirs_changed: int
    data_added: int
    total_files_processed: int
    total_bytes_processed: int
    total_duration: float
    outcome: Outcome = Outcome.OK
    unreadable: tuple[str, ...] = ()
    #: More files were unreadable than restic's error tail named.
    more_unreadable: bool = False

    @property
    def warning(self) -> str | None:
        """One line saying what the snapshot lacks, or None when it is complete."""
        if self.outcome is not Outcome.WARNING:
            return None
        if not self.unreadable:
            return f"snapshot {self.snapshot_id} was made, but some files could not be read"
        shown = ", ".join(self.unreadable[:5])
        more = len(self.unreadable) - 5
        rest = f" and {more} more" if more > 0 else (" and possibly more" if self.more_unreadable else "")
        return f"snapshot {self.snapshot_id} was made without {len(self.unreadable)} unreadable file(s): {shown}{rest}"


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as ``restic snapshots --json`` lists it."""

    id: str
    short_id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()
    username: str | None = None
    tree: str | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Snapshot:
        try:
            return cls(
                id=value["id"], short_id=value.get("short_id") or value["id"][:8], time=parse_time(value["time"]),
                hostname=value.get("hostname", ""), paths=tuple(value.get("paths") or ()),
                tags=tuple(value.get("tags") or ()), username=value.get("username"), tree=value.get("tree"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"restic listed a snapshot Helpline cannot read ({exc!r})") from None


@dataclass(frozen=True)
class Node:
    """One file, folder or link in a snapshot, as ``restic ls --json`` prints it."""

    path: str
    name: str
    type: str
    size: int | None = None
    mtime: datetime | None = None
    permissions: str | None = None
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Node:
        mtime = value.get("mtime")
        return cls(
            path=value["path"], name=value.get("name", ""), type=value.get("type", ""), size=value.get("size"),
            mtime=parse_time(mtime) if mtime else None, permissions=value.get("permissions"),
            uid=value.get("uid"), gid=value.get("gid"),
        )


@dataclass(frozen=True)
class Listing:
    """A snapshot's files as listed; ``truncated`` when there were more than the caller wanted."""

    snapshot: Snapshot | None
    nodes: tuple[Node, ...]
    truncated: bool = False


@dataclass(frozen=True)
class RestoreSummary:
    """What a restore wrote. Restic 0.14 reports in text only, so the counts are None there."""

    snapshot_id: str | None
    target: str
    files_restored: int | None = None
    bytes_restored: int | None = None
    total_files: int | None = None
    total_bytes: int | None = None
    files_skipped: int | None = None
    seconds_elapsed: float | None = None


@dataclass(frozen=True)
class ForgetResult:
    """Which snapshots a retention run kept and removed (full ids)."""

    kept: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One changed path between two snapshots: ``modifier`` is ``+`` added, ``-`` removed, ``M`` content, ``U``
    metadata, ``T`` type (restic's letters)."""

    path: str
    modifier: str


@dataclass(frozen=True)
class Diff:
    """What changed from one snapshot to another, and restic's totals of it."""

    changes: tuple[Change, ...]
    changed_files: int | None = None
    added_bytes: int | None = None
    removed_bytes: int | None = None


@dataclass(frozen=True)
class Stats:
    """Restic's size count for some snapshots, in the mode it was asked for."""

    total_size: int
    total_file_count: int | None = None
    snapshots_count: int | None = None
    total_blob_count: int | None = None


@dataclass(frozen=True)
class LockInfo:
    """One repository lock: who holds it (host name, pid), since when, and whether it excludes everyone else."""

    id: str
    hostname: str
    pid: int
    time: datetime
    exclusive: bool = False
    username: str | None = None

    @classmethod
    def from_json(cls, lock_id: str, value: dict[str, Any]) -> LockInfo:
        try:
            return cls(id=lock_id, hostname=str(value["hostname"]), pid=int(value["pid"]),
                       time=parse_time(value["time"]), exclusive=bool(value.get("exclusive", False)),
                       username=value.get("username"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"restic printed a lock Helpline cannot read ({exc!r})") from None


def _progress(value: dict[str, Any]) -> Progress:
    done = value.get("percent_done") or 0.0
    return Progress(
        percent=round(100.0 * float(done), 2),
        files_done=int(value.get("files_done") or value.get("files_restored") or 0),
        total_files=int(value.get("total_files") or 0),
        bytes_done=int(value.get("bytes_done") or value.get("bytes_restored") or 0),
        total_bytes=int(value.get("total_bytes") or 0),
        current_files=tuple(value.get("current_files") or ()),
        seconds_elapsed=value.get("seconds_elapsed"),
    )


def unreadable_items(lines: Iterable[str]) -> tuple[str, ...]:
    """Return the paths named by restic's JSON error lines (``message_type: error``, ``item``), in order, once each."""
    found: list[str] = []
    for line in lines:
        value = json_line(line)
        if value and value.get("message_type") == "error" and value.get("item") and value["item"] not in found:
            found.append(str(value["item"]))
    return tuple(found)


@dataclass
class BackupOutput:
    """The reader of a backup's stdout: status lines to ``on_progress``, the summary and error lines kept."""

    on_progress: Callable[[Progress], None] | None = None
    summary: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        value = json_line(line)
        if value is None:
            return
        kind = value.get("message_type")
        if kind == "status" and self.on_progress is not None:
            self.on_progress(_progress(value))
        elif kind == "summary":
            self.summary = value
        elif kind == "error":
            self.errors.append(line)

    def result(self, outcome: Outcome, stderr_tail: str, *, tail_full: bool) -> BackupSummary:
        """Return the typed summary; unreadable files come from the error lines of stdout and of ``stderr_tail``."""
        if self.summary is None:
            raise InvalidInputError("restic finished a backup without its summary line",
                                    hint="check that the restic program is the real restic")
        value = self.summary
        try:
            unreadable = unreadable_items([*self.errors, *stderr_tail.splitlines()])
            return BackupSummary(
                snapshot_id=str(value["snapshot_id"]),
                files_new=int(value.get("files_new", 0)), files_changed=int(value.get("files_changed", 0)),
                files_unmodified=int(value.get("files_unmodified", 0)), dirs_new=int(value.get("dirs_new", 0)),
                dirs_changed=int(value.get("dirs_changed", 0)), data_added=int(value.get("data_added", 0)),
                total_files_processed=int(value.get("total_files_processed", 0)),
                total_bytes_processed=int(value.get("total_bytes_processed", 0)),
                total_duration=float(value.get("total_duration", 0.0)),
                outcome=outcome, unreadable=unreadable if outcome is Outcome.WARNING else (),
                more_unreadable=outcome is Outcome.WARNING and tail_full,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"restic printed a backup summary Helpline cannot read ({exc!r})") from None


@dataclass
class RestoreOutput:
    """The reader of a restore's stdout: JSON status and summary on newer restic, the 'restoring' line on 0.14."""

    target: str
    on_progress: Callable[[Progress], None] | None = None
    snapshot_id: str | None = None
    summary: dict[str, Any] | None = None

    def __call__(self, line: str) -> None:
        found = _RESTORING.match(line.strip())
        if found:
            self.snapshot_id = found[1]
            return
        value = json_line(line)
        if value is None:
            return
        kind = value.get("message_type")
        if kind == "status" and self.on_progress is not None:
            self.on_progress(_progress(value))
        elif kind == "summary":
            self.summary = value

    def result(self) -> RestoreSummary:
        value = self.summary or {}
        return RestoreSummary(
            snapshot_id=self.snapshot_id, target=self.target,
            files_restored=value.get("files_restored"), bytes_restored=value.get("bytes_restored"),
            total_files=value.get("total_files"), total_bytes=value.get("total_bytes"),
            files_skipped=value.get("files_skipped"), seconds_elapsed=value.get("seconds_elapsed"),
        )


def read_snapshots(text: str) -> tuple[Snapshot, ...]:
    """Return the snapshots of ``restic snapshots --json`` output, oldest first."""
    value = _whole_json(text, "snapshot list")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInputError("restic's snapshot list is not a list")
    return tuple(sorted((Snapshot.from_json(item) for item in value), key=lambda snap: snap.time))


def read_forget(text: str) -> ForgetResult:
    """Return what ``restic forget --json`` kept and removed, over all its groups."""
    value = _whole_json(text, "retention result") or []
    if not isinstance(value, list):
        raise InvalidInputError("restic's retention result is not a list")
    kept: list[str] = []
    removed: list[str] = []
    for group in value:
        kept += [snap["id"] for snap in group.get("keep") or ()]
        removed += [snap["id"] for snap in group.get("remove") or ()]
    return ForgetResult(tuple(kept), tuple(removed))


def read_diff(lines: Iterable[str]) -> Diff:
    """Return the changes and totals of ``restic diff --json`` output lines."""
    changes: list[Change] = []
    totals: dict[str, Any] = {}
    for line in lines:
        value = json_line(line)
        if value is None:
            continue
        if value.get("message_type") == "change":
            changes.append(Change(str(value["path"]), str(value.get("modifier", ""))))
        elif value.get("message_type") == "statistics":
            totals = value
    return Diff(
        tuple(changes), changed_files=totals.get("changed_files"),
        added_bytes=(totals.get("added") or {}).get("bytes"), removed_bytes=(totals.get("removed") or {}).get("bytes"),
    )


def read_stats(text: str) -> Stats:
    """Return the totals of ``restic stats --json`` output."""
    value = _whole_json(text, "size count")
    if not isinstance(value, dict) or "total_size" not in value:
        raise InvalidInputError("restic's size count has no total size")
    return Stats(int(value["total_size"]), value.get("total_file_count"), value.get("snapshots_count"),
                 value.get("total_blob_count"))


def read_lock(lock_id: str, text: str) -> LockInfo:
    """Return the lock of ``restic cat lock ID`` output."""
    value = _whole_json(text, "lock")
    if not isinstance(value, dict):
        raise InvalidInputError("restic printed a lock that is not an object")
    return LockInfo.from_json(lock_id, value)


def _whole_json(text: str, what: str) -> Any:
    """Return the JSON document restic printed (ignoring any text lines around it), or None when it printed none."""
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in text.splitlines():  # some commands print a text line before the JSON document
        line = line.strip()
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise InvalidInputError(f"restic printed a {what} Helpline cannot read")
