"""Engineer -> PC requests: snapshot now, restore, fresh diagnostics, browse and diff a snapshot.

An engineer asks the server; the server signs the request with its own key
(purpose ``pc-request``) and hands it to the named PC's agent over its long
poll. The PC runs it only when the signature is by the server key it pinned,
the request names this PC, it has not expired (a clock-skew allowance either
side) and it never ran before (the PC remembers run ids and nonces). So neither
a database row nor a relay can make a PC restore files: only the server key can.

``params`` depend on the kind and are checked by the models below on both
sides; a PC refuses a request whose params it cannot read.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from protocol.errors import AuthError, ForbiddenError, InvalidInputError
from protocol.schemas import _Model, describe_invalid
from protocol.signing import sign, signed_by

PC_REQUEST_PURPOSE = "pc-request"

#: How long an engineer's request may wait for the PC (and the user's consent) by default, and at most.
DEFAULT_EXPIRES_MINUTES = 60
MAX_EXPIRES_MINUTES = 7 * 24 * 60
#: The longest a long poll (the PC's or an engineer's) is held open, in seconds.
MAX_WAIT_SECONDS = 55
#: How far a PC's clock may be from the server's when it checks a request's expiry.
CLOCK_SKEW = timedelta(seconds=60)


class PcRequestKind(StrEnum):
    SNAPSHOT = "snapshot"  # take a snapshot now
    RESTORE = "restore"  # restore paths (or everything) of a snapshot, perhaps another PC's (replacement)
    DIAGNOSTICS = "diagnostics"  # gather a fresh diagnostics bundle and send it to the ticket
    BROWSE = "browse"  # list the files of a snapshot under a path
    DIFF = "diff"  # what changed between two snapshots


class PcRequestState(StrEnum):
    QUEUED = "queued"  # made by an engineer, not yet fetched by the PC
    DELIVERED = "delivered"  # the PC fetched it
    WAITING_CONSENT = "waiting_consent"  # the PC waits for its user to approve (restores)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"  # the PC (verification) or its user refused it
    EXPIRED = "expired"  # nobody ran it before its expiry


#: States after which nothing changes any more.
FINAL_STATES = frozenset({PcRequestState.DONE, PcRequestState.FAILED, PcRequestState.REFUSED, PcRequestState.EXPIRED})
#: States a PC may report for its request.
REPORTED_STATES = frozenset({PcRequestState.WAITING_CONSENT, PcRequestState.RUNNING, PcRequestState.DONE,
                             PcRequestState.FAILED, PcRequestState.REFUSED})

# --- params, per kind -----------------------------------------------------------------

SnapshotRef = Annotated[str, StringConstraints(pattern=r"^(latest|[0-9a-f]{8,64})$")]
AgentRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
OsUser = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._ $-]{0,63}$")]
_MAX_PATHS = 1000
_MAX_PATH = 4096


def _absolute(path: str) -> str:
    """``path`` if it is an absolute POSIX or Windows path with no '..' component; ValueError otherwise."""
    if not isinstance(path, str) or not path or len(path) > _MAX_PATH or any(c in path for c in "\x00\r\n"):
        raise ValueError("must be an absolute path of at most 4096 characters, on one line")
    for flavour in (PurePosixPath, PureWindowsPath):
        pure = flavour(path)
        if pure.is_absolute() or (flavour is PurePosixPath and path.startswith("/")):
            if ".." in pure.parts:
                raise ValueError("must not contain '..'")
            return path
    raise ValueError(f"must be an absolute path (got {path[:60]!r})")


AbsolutePath = Annotated[str, Field(max_length=_MAX_PATH)]


def _check_paths(paths: list[str]) -> list[str]:
    if len(paths) > _MAX_PATHS:
        raise ValueError(f"at most {_MAX_PATHS} paths")
    return [_absolute(p) for p in paths]


class SnapshotParams(_Model):
    """Take a snapshot now: of the policy's paths, or of ``paths``."""

    paths: list[AbsolutePath] = Field(default_factory=list)
    repository: Literal["local", "server"] | None = None  # None: every repository the policy names

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return _check_paths(value)


def parse_target(target: str) -> tuple[str, str | None]:
    """Split a restore target into its mode and folder: ("beside", None), ("folder", "/abs"), ("overwrite", None)."""
    if target in ("beside", "overwrite"):
        return target, None
    if target.startswith("folder:"):
        return "folder", _absolute(target[len("folder:"):])
    raise ValueError("must be 'beside', 'overwrite' or 'folder:<absolute path>'")


class RestoreParams(_Model):
    """Restore ``paths`` (empty: everything) of a snapshot, beside the originals, into a folder, or over them."""

    snapshot: SnapshotRef = "latest"
    at: datetime | None = None  # the newest snapshot at or before this time (instead of ``snapshot``)
    paths: list[AbsolutePath] = Field(default_factory=list)
    target: str = "beside"
    source_agent_id: AgentRef | None = None  # a replacement restore: the old PC whose server-side repository is read
    user: OsUser | None = None  # the OS user whose files these are; restored files belong to them
    repository: Literal["local", "server"] | None = None  # None: local if it has the snapshot, else the server's

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return _check_paths(value)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        parse_target(value)
        return value

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError("must carry a time zone")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RestoreParams:
        if self.at is not None and self.snapshot != "latest":
            raise ValueError("give a snapshot or a time, not both")
        if self.source_agent_id is not None and self.repository == "local":
            raise ValueError("a restore from another PC reads its server-side repository, not a local one")
        return self


class DiagnosticsParams(_Model):
    """Gather a fresh diagnostics bundle and send it to the request's ticket."""


class BrowseParams(_Model):
    """List what a snapshot holds under ``path``."""

    snapshot: SnapshotRef = "latest"
    path: AbsolutePath = "/"
    recursive: bool = False
    source_agent_id: AgentRef | None = None
    repository: Literal["local", "server"] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _absolute(value)


class DiffParams(_Model):
    """What changed between two snapshots (optionally under ``path`` only)."""

    snapshot: SnapshotRef
    other: SnapshotRef
    path: AbsolutePath | None = None
    repository: Literal["local", "server"] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return value if value is None else _absolute(value)


PARAMS: dict[PcRequestKind, type[_Model]] = {
    PcRequestKind.SNAPSHOT: SnapshotParams,
    PcRequestKind.RESTORE: RestoreParams,
    PcRequestKind.DIAGNOSTICS: DiagnosticsParams,
    PcRequestKind.BROWSE: BrowseParams,
    PcRequestKind.DIFF: DiffParams,
}


def check_params(kind: PcRequestKind | str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` for ``kind`` as they travel (checked, defaults filled, None left out); InvalidInputError if wrong."""
    model = read_params(kind, params)
    return model.model_dump(mode="json", exclude_none=True)


def read_params(kind: PcRequestKind | str, params: dict[str, Any]) -> Any:
    """The typed params of a ``kind`` request (SnapshotParams, RestoreParams, …); InvalidInputError if wrong."""
    try:
        model = PARAMS[PcRequestKind(kind)]
    except ValueError:
        raise InvalidInputError(f"{str(kind)[:40]!r} is not a kind of request a PC takes.",
                                hint="Use one of: " + ", ".join(k.value for k in PcRequestKind) + ".") from None
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise InvalidInputError(f"The {PcRequestKind(kind).value} request's parameters are wrong: "
                                f"{describe_invalid(exc.errors())}") from None


# --- the signed request --------------------------------------------------------------

_ID = r"^[0-9a-f-]{36}$"


class PcRequest(BaseModel):
    """The request as the server signs it and the PC checks it."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    id: str = Field(pattern=_ID)
    agent_id: str = Field(min_length=1, max_length=64)
    kind: PcRequestKind
    params: dict[str, Any] = Field(default_factory=dict)
    ticket: str | None = Field(default=None, pattern=r"^T-[0-9]{1,9}$")
    requested_by: str = Field(min_length=1, max_length=64)
    requested_by_name: str = Field(max_length=200)
    created_at: datetime
    expires_at: datetime
    nonce: str = Field(min_length=16, max_length=100)
    #: The admin's setting allows this restore to run without the user's consent (never a shell).
    unattended: bool = False

    @field_validator("created_at", "expires_at", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a time zone")
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _consistent(self) -> PcRequest:
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        read_params(self.kind, self.params)  # raises InvalidInputError, which pydantic does not wrap
        return self

    def typed_params(self) -> Any:
        """The params as the model of this kind (RestoreParams, …)."""
        return read_params(self.kind, self.params)


class SignedPcRequest(BaseModel):
    """A request as it travels: the exact payload the server signed and the base64 signature."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    payload: dict[str, Any]
    signature: str = Field(max_length=200)


def _signed_payload(payload: dict[str, Any]) -> dict[str, Any]:
    # The purpose keeps a request signature from being valid as any other server signature, and back.
    return {"purpose": PC_REQUEST_PURPOSE, "request": payload}


def sign_pc_request(server_key: Ed25519PrivateKey, request: PcRequest) -> SignedPcRequest:
    """Sign ``request`` with the server key; the PC checks it with :func:`verify_pc_request`."""
    payload = request.model_dump(mode="json")
    return SignedPcRequest(payload=payload, signature=sign(server_key, _signed_payload(payload)))


def verify_pc_request(signed: SignedPcRequest, *, pinned_server_key: str | Ed25519PublicKey, agent_id: str,
                      now: datetime, skew: timedelta = CLOCK_SKEW) -> PcRequest:
    """Return the request if the pinned server key signed it for this agent and it has not expired at ``now``.

    Raise AuthError for a bad signature or an expired request (``skew`` allowed),
    ForbiddenError for a request naming another agent, InvalidInputError for one
    this version cannot read (an unknown kind, wrong params).
    """
    if now.tzinfo is None:
        raise InvalidInputError("The time to check a request at must carry a time zone.")
    if not signed_by(pinned_server_key, _signed_payload(signed.payload), signed.signature):
        raise AuthError("The request is not signed by this PC's server.")
    try:
        request = PcRequest.model_validate(signed.payload)
    except ValidationError as exc:
        raise InvalidInputError(f"The request is unreadable: {describe_invalid(exc.errors())}") from None
    if request.agent_id != agent_id:
        raise ForbiddenError("The request is for another PC.")
    if now >= request.expires_at + skew:
        raise AuthError("The request has expired.")
    if now < request.created_at - skew:
        raise AuthError("The request is dated in the future (check this PC's clock).")
    return request


# --- what engineers send and see, and what the PC reports ---------------------------------


class PcRequestCreate(_Model):
    """An engineer's request to a PC."""

    kind: PcRequestKind
    params: dict[str, Any] = Field(default_factory=dict)
    ticket: str | None = Field(default=None, max_length=20)
    expires_minutes: int = Field(default=DEFAULT_EXPIRES_MINUTES, ge=1, le=MAX_EXPIRES_MINUTES)

    @model_validator(mode="after")
    def _params_fit_kind(self) -> PcRequestCreate:
        try:
            object.__setattr__(self, "params", check_params(self.kind, self.params))
        except InvalidInputError as exc:
            raise ValueError(exc.message) from None
        return self


class PcRequestPublic(_Model):
    """A request as engineers (and the PC) see it, with where it stands."""

    id: str
    agent_id: str
    hostname: str
    kind: PcRequestKind
    params: dict[str, Any]
    ticket: str | None
    requested_by: str
    requested_by_name: str
    created_at: datetime
    expires_at: datetime
    nonce: str
    unattended: bool = False
    state: PcRequestState
    progress: float | None = None
    detail: str = ""
    result: dict[str, Any] | None = None
    updated_at: datetime
    #: Grows by one at every change; an engineer's long poll waits for a version above the one it saw.
    version: int = 0

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class PcRequestUpdate(_Model):
    """What a PC reports about one of its requests."""

    state: PcRequestState
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    detail: Annotated[str, StringConstraints(max_length=2000)] = ""
    result: dict[str, Any] | None = None

    @field_validator("state")
    @classmethod
    def _reportable(cls, value: PcRequestState) -> PcRequestState:
        if value not in REPORTED_STATES:
            raise ValueError("a PC reports waiting_consent, running, done, failed or refused")
        return value


# --- results the PC sends back (in PcRequestUpdate.result) -------------------------------------
# What the PC's handlers (agent.snapshots.handlers) answer; read leniently (a newer PC may add fields).


class _Result(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")


class SnapshotRunResult(_Result):
    repository: str
    status: str  # ok | partial | failed
    snapshot_id: str | None = None
    files_new: int = 0
    bytes_added: int = 0
    warnings: list[str] = Field(default_factory=list)
    error: str | None = None


class SnapshotResult(_Result):
    runs: list[SnapshotRunResult] = Field(default_factory=list)


class RestoredPath(_Result):
    path: str
    placed_at: str
    kept_at: str | None = None  # overwriting: where what it replaced was put aside
    snapshot_id: str | None = None


class RestoreResult(_Result):
    restored: list[RestoredPath] = Field(default_factory=list)


class BrowseEntry(_Result):
    path: str
    type: str  # file | dir | symlink | …
    size: int | None = None
    mtime: datetime | None = None


class BrowseResult(_Result):
    snapshot_id: str | None = None
    nodes: list[BrowseEntry] = Field(default_factory=list)
    truncated: bool = False


class DiffChange(_Result):
    path: str
    modifier: str  # + added, - removed, M modified, T type changed, U metadata


class DiffResult(_Result):
    changes: list[DiffChange] = Field(default_factory=list)
    truncated: bool = False
    added_bytes: int | None = None
    removed_bytes: int | None = None
