"""The records diagnostics collection produces: one :class:`Item` per file in the
staging directory, one :class:`CollectorResult` per collector, one
:class:`CollectionReport` per run.

Redaction and bundling read these records (and the staging directory they
describe), so every record turns into plain JSON with ``to_dict`` and back with
``from_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class ItemStatus(str, Enum):
    """How gathering one item went; modelled on sos's command statuses (124, 127)."""

    OK = "ok"
    TIMEOUT = "timeout"  # killed at its deadline; partial output kept
    TRUNCATED = "truncated"  # stopped at the byte cap; the head (or head and tail) kept
    NOT_FOUND = "not_found"  # the binary or file does not exist on this PC
    DENIED = "denied"  # the OS refused to run or read it
    ERROR = "error"  # it ran but failed (nonzero exit, bad output); output kept
    SKIPPED = "skipped"  # deliberately not gathered (forbidden path, not applicable, out of time)


class CollectorStatus(str, Enum):
    """How one collector as a whole went."""

    OK = "ok"
    ERROR = "error"  # the collector raised; its message is in ``error``
    TIMEOUT = "timeout"  # it outlived its own or the global deadline
    SKIPPED = "skipped"  # it does not apply to this PC


class ItemKind(str, Enum):
    """What an item's file holds, so redaction can treat logs differently from facts."""

    COMMAND = "command"  # stdout of a command
    FILE = "file"  # a copy of a file on the PC
    FACTS = "facts"  # JSON or text written by the collector itself
    LOG = "log"  # log lines, from a log file or a log command


@dataclass(frozen=True)
class Item:
    """One file in the staging directory and how it came to be.

    ``path`` is relative to the staging directory (POSIX separators). The file
    exists unless ``status`` is ``not_found``, ``denied`` or ``skipped``.
    """

    path: str
    category: str
    source: str
    kind: ItemKind
    status: ItemStatus
    duration: float = 0.0
    size: int = 0
    exit_code: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the item as plain JSON types (enums as their values)."""
        return {
            "path": self.path,
            "category": self.category,
            "source": self.source,
            "kind": self.kind.value,
            "status": self.status.value,
            "duration": round(self.duration, 4),
            "size": self.size,
            "exit_code": self.exit_code,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        """Rebuild an item from :meth:`to_dict` output; raise KeyError/ValueError on malformed data."""
        return cls(
            path=data["path"],
            category=data["category"],
            source=data["source"],
            kind=ItemKind(data["kind"]),
            status=ItemStatus(data["status"]),
            duration=float(data.get("duration", 0.0)),
            size=int(data.get("size", 0)),
            exit_code=data.get("exit_code"),
            note=data.get("note"),
        )


@dataclass
class CollectorResult:
    """What one collector gathered: its items, its normalised facts and how it ended."""

    name: str
    category: str
    status: CollectorStatus
    duration: float = 0.0
    items: list[Item] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result, its items and facts as plain JSON types."""
        return {
            "name": self.name,
            "category": self.category,
            "status": self.status.value,
            "duration": round(self.duration, 4),
            "items": [item.to_dict() for item in self.items],
            "facts": self.facts,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectorResult:
        """Rebuild a result from :meth:`to_dict` output."""
        return cls(
            name=data["name"],
            category=data["category"],
            status=CollectorStatus(data["status"]),
            duration=float(data.get("duration", 0.0)),
            items=[Item.from_dict(item) for item in data.get("items", [])],
            facts=dict(data.get("facts", {})),
            error=data.get("error"),
        )


@dataclass
class CollectionReport:
    """The outcome of one ``collect()`` run over a staging directory."""

    started_at: datetime
    finished_at: datetime
    platform: str
    deadline: float
    results: list[CollectorResult] = field(default_factory=list)

    @property
    def items(self) -> list[Item]:
        """Every item of every collector, in collector order."""
        return [item for result in self.results for item in result.items]

    @property
    def duration(self) -> float:
        """Seconds the whole collection took."""
        return (self.finished_at - self.started_at).total_seconds()

    def result(self, name: str) -> CollectorResult:
        """Return the result of the collector called ``name``; raise KeyError if it did not run."""
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON types (times as ISO 8601 UTC)."""
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration": round(self.duration, 4),
            "platform": self.platform,
            "deadline": self.deadline,
            "results": [result.to_dict() for result in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionReport:
        """Rebuild a report from :meth:`to_dict` output, e.g. on the server side."""
        return cls(
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]),
            platform=data["platform"],
            deadline=float(data["deadline"]),
            results=[CollectorResult.from_dict(result) for result in data.get("results", [])],
        )
