"""The model of a bundle's ``manifest.json``, for the programs that read one: the server and the engineer's CLI.

A manifest that arrives from a PC is untrusted: :func:`parse_manifest` validates
it against :class:`Manifest`. The agent writes its manifests as plain JSON in
exactly this form (:mod:`agent.bundle.manifest`); its tests hold the two
together, so the agent does not load the model library to share diagnostics.
The JSON a manifest dumps to is the format of schema version 1, unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_serializer

from protocol.bundle import (
    _MAX_PROBLEM_PATH,
    FULL_REPORT,
    MANIFEST_NAME,
    MAX_COUNT,
    RedactionStatus,
    check_document,
    load_document,
)
from protocol.errors import InvalidInputError


class _Record(BaseModel):
    """A part of the manifest: unknown fields are refused, so a reader never guesses at them."""

    model_config = ConfigDict(defer_build=True, extra="forbid")


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

    items: int = Field(ge=0, le=MAX_COUNT)
    files: int = Field(ge=0, le=MAX_COUNT)
    bytes: int = Field(ge=0)
    left_out: int = Field(ge=0, le=MAX_COUNT)
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

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> Any:
        """Leave out the counts a manifest did not carry (written before they existed), so stored ones round-trip."""
        data = handler(self)
        if isinstance(data, dict):
            for name in _LATER_COUNTS - self.model_fields_set:
                data.pop(name, None)
        return data


_LATER_COUNTS = frozenset({"files_checked", "kinds_checked", "withheld_lines"})


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
    strict JSON (see :func:`load_document`) or not a manifest of a known schema:
    a manifest from a PC is untrusted.
    """
    if isinstance(data, (bytes, str)):
        data = load_document(data, where=where)
    else:
        check_document(data, where=where)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{where} is not a valid bundle manifest: {_first_problem(exc)}.",
                                hint="Share the diagnostics again with a current Helpline agent.") from None


def _first_problem(exc: ValidationError) -> str:
    """The first validation error as ``field.path: message``, cut short: field names come from the sender."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the document"
    if len(where) > _MAX_PROBLEM_PATH:
        where = where[:_MAX_PROBLEM_PATH] + "…"
    return f"{where}: {error['msg']}"
