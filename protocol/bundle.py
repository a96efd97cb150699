"""The diagnostics bundle as a protocol: the names of its members and the model of its manifest.

The agent writes a bundle directory (and packs it, see :mod:`protocol.archive`);
the server and the engineer's CLI read it back. Both sides spell the member
names through the constants here and read ``manifest.json`` through
:class:`Manifest`, so a manifest that arrives from a PC is validated (it is
untrusted) and one the agent writes has exactly the fields readers expect. The
JSON a manifest dumps to is the format of schema version 1, unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from protocol.errors import InvalidInputError

#: Version of the bundle layout and manifest written today.
BUNDLE_SCHEMA_VERSION = 1
#: The folder of the bundle that holds every collected file, redacted.
RAW_DIR = "raw"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"
#: The documents at the top of every bundle, in the order they are written.
DOCUMENTS = (SUMMARY_NAME, REPORT_NAME, MANIFEST_NAME)
#: Members a bundle archive must hold at its top.
REQUIRED_MEMBERS = (MANIFEST_NAME, SUMMARY_NAME, REPORT_NAME)
#: Largest manifest and summary a reader accepts.
MANIFEST_MAX_BYTES = 16 << 20
SUMMARY_MAX_BYTES = 4 << 20

#: What became of an item's file: redacted into raw/, refused, unreadable, or there was no file.
RedactionStatus = Literal["scrubbed", "dropped", "not_scrubbed", "no_file"]
#: Redaction status of an item that produced no file (not found, denied, skipped).
NO_FILE = "no_file"
#: Item status of a file found in staging that the collection report does not list.
UNLISTED = "unlisted"
#: Collector status of a category the user left out.
EXCLUDED = "excluded"
#: ``verification.report_html`` when the full page was written.
FULL_REPORT = "full"


_MAX_PROBLEM_PATH = 120


def raw_member(path: str) -> str:
    """Return the bundle member name of the raw file at bundle path ``path`` (``raw/<path>``)."""
    return f"{RAW_DIR}/{path}"


class _Record(BaseModel):
    """A part of the manifest: unknown fields are refused, so a reader never guesses at them."""

    model_config = ConfigDict(extra="forbid")


class DetectorCount(_Record):
    """How many values one detector replaced (a list of these, never ``{"password": 2}``, which looks secret)."""

    detector: str
    count: int = Field(ge=0)


class ItemRedaction(_Record):
    """What redaction did to one item's file."""

    status: RedactionStatus
    counts: list[DetectorCount]
    reason: str | None


class ManifestItem(_Record):
    """One collected item (or a file found in staging but not listed) and what became of it."""

    path: str
    file: str | None = Field(description="The member under raw/ when the file is in the bundle, else null.")
    category: str
    source: str
    kind: str | None
    status: str
    listed: bool
    duration: float
    exit_code: int | None
    note: str | None
    size: int | None = Field(ge=0)
    sha256: str | None
    redaction: ItemRedaction


class CollectorRecord(_Record):
    """One collector's run: its status (or ``excluded``), time, error and how many items it listed."""

    name: str
    category: str
    status: str
    duration: float
    error: str | None
    items: int = Field(ge=0)


class CollectionTimes(_Record):
    """When the collection ran and under which deadline (seconds)."""

    started_at: datetime
    finished_at: datetime
    deadline: float
    duration: float

    @field_serializer("started_at", "finished_at")
    def _iso(self, value: datetime) -> str:
        return value.isoformat(timespec="seconds")


class Totals(_Record):
    """Counts over every item: how many files are bundled, their bytes, what was left out and redacted."""

    items: int = Field(ge=0)
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)
    left_out: int = Field(ge=0)
    by_redaction_status: dict[str, int]
    redactions: list[DetectorCount]
    metadata_redactions: list[DetectorCount]


class DroppedFile(_Record):
    """A file the final check found something in, and so removed."""

    path: str
    reason: str | None


class Verification(_Record):
    """What the final check over the whole bundle changed."""

    dropped: list[DroppedFile]
    withheld_values: int = Field(default=0, ge=0)
    report_html: str = FULL_REPORT
    #: What was checked: files (raw files and documents) and kinds of secret looked for.
    files_checked: int = Field(default=0, ge=0)
    kinds_checked: int = Field(default=0, ge=0)
    #: Lines of raw files replaced by a marker because the check still found something in them.
    withheld_lines: int = Field(default=0, ge=0)


class DocumentRecord(_Record):
    """Size and SHA-256 of summary.json or report.html."""

    size: int = Field(ge=0)
    sha256: str


class Manifest(_Record):
    """``manifest.json``: what the bundle holds, where it came from, and the fate of every file."""

    schema_version: Literal[1]
    created_at: datetime
    helpline_version: str
    platform: str
    hostname: str | None
    collection: CollectionTimes
    build_seconds: float
    collectors: list[CollectorRecord]
    excluded: list[str]
    items: list[ManifestItem]
    totals: Totals
    verification: Verification
    extra: dict[str, Any] | None
    documents: dict[str, DocumentRecord] = Field(default_factory=dict)

    @field_serializer("created_at")
    def _iso(self, value: datetime) -> str:
        return value.isoformat()

    def to_document(self) -> dict[str, Any]:
        """Return the manifest as the plain JSON data written to ``manifest.json``."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """Return the text of ``manifest.json``: indented, UTF-8 characters kept, a final newline."""
        return json.dumps(self.to_document(), indent=2, ensure_ascii=False) + "\n"


def parse_manifest(data: bytes | str | Any, *, where: str = MANIFEST_NAME) -> Manifest:
    """Return the manifest in ``data`` (the file's bytes or text, or parsed JSON) validated.

    Raise InvalidInputError naming ``where`` and the first problem if it is not
    JSON or not a manifest of a known schema: a manifest from a PC is untrusted.
    """
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidInputError(f"{where} is not valid JSON.", hint="Share the diagnostics again.") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{where} is not a valid bundle manifest: {_first_problem(exc)}.",
                                hint="Share the diagnostics again with a current Helpline agent.") from None


def parse_summary(data: bytes | str, *, where: str = SUMMARY_NAME) -> dict[str, Any]:
    """Return ``summary.json``'s object; raise InvalidInputError if it is not a JSON object."""
    try:
        summary = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError(f"{where} is not valid JSON.", hint="Share the diagnostics again.") from None
    if not isinstance(summary, dict):
        raise InvalidInputError(f"{where} is not a JSON object.", hint="Share the diagnostics again.")
    return summary


def _first_problem(exc: ValidationError) -> str:
    """The first validation error as ``field.path: message``, cut short: field names come from the sender."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the document"
    if len(where) > _MAX_PROBLEM_PATH:
        where = where[:_MAX_PROBLEM_PATH] + "…"
    return f"{where}: {error['msg']}"
