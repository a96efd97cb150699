"""Per-group policies: what an admin sets for a group of PCs, checked the same way on the server and the agent.

An admin sets a group's policy (``helpline policy set GROUP --file policy.toml``);
each change is a new version of that group's policy (1, 2, 3, …). The server
delivers it to each PC of the group as a statement signed with the server key
(purpose ``group-policy``) naming the PC, the group, the version, the body and
when it was issued; the PC checks it with the key it pinned and refuses a
forged one, one for another PC, and an older one than it runs (no downgrade).

What a policy may say (every part optional; a part left out leaves the PC's own
configuration in force for it)::

    escrow = true
    server_quota = "50G"   # each PC's repository on the server, instead of the server's [snapshots] quota_bytes
    unattended = ["restore", "diagnostics"]   # never a shell or session: no such value exists

    [snapshots]            # the keys of the agent's [snapshots], less local_repository
    paths = ["~", "/srv/projects"]
    exclude = ["*.iso"]
    interval = "2h"
    keep_daily = 14
    local_max_size = "200G"

    [collectors]
    disabled = ["browser"]
    extra_log_globs = ["/var/log/myapp/*.log"]

    [consent]
    wait_minutes = 30      # how long a request waits for the user's answer at most

Which wins: for every key a group policy sets, the group policy; for every key it
leaves out, the PC's own configuration (agent.toml), then the defaults.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from protocol import times
from protocol.errors import AuthError, ForbiddenError, InvalidInputError
from protocol.schemas import _Model, describe_invalid
from protocol.signing import sign, signed_by
from protocol.units import parse_size

POLICY_PURPOSE = "group-policy"

GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
#: The only kinds of engineer request a policy can let run without the user's approval.
UnattendedKind = Literal["restore", "diagnostics"]
#: Words an admin might try that can never be unattended: refused with a message that says so.
_NEVER_UNATTENDED = frozenset({"session", "sessions", "shell", "connect", "remote-session", "remote_session", "ssh"})

_MAX_ITEMS = 200
_MAX_TEXT = 1024


def size_bytes(text: str) -> int:
    """``500M``, ``20G``, ``1.5TiB`` as a whole number of bytes (the agent's [snapshots] sizes, read alike)."""
    return parse_size(text)


def _text_items(values: list[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    if len(values) > _MAX_ITEMS:
        raise ValueError(f"at most {_MAX_ITEMS} {what}")
    for value in values:
        if not value.strip() or len(value) > _MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"each of the {what} must be non-empty text of at most {_MAX_TEXT} characters on one line")
    return values


def _home_or_absolute(values: list[str] | None, what: str) -> list[str] | None:
    values = _text_items(values, what)
    for value in values or []:
        if not (value.startswith("~") or value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value)):
            raise ValueError(f"each of the {what} must be absolute or start with ~ (got {value[:60]!r})")
        if ".." in re.split(r"[\\/]", value):
            raise ValueError(f"the {what} must not contain '..'")
    return values


class _Part(_Model):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class SnapshotRules(_Part):
    """The ``[snapshots]`` keys a group sets: schedule, paths and excludes, retention, quota on the local repository."""

    enabled: bool | None = None
    paths: list[str] | None = None
    exclude: list[str] | None = None
    default_excludes: bool | None = None
    one_file_system: bool | None = None
    interval: str | None = None
    retry_after: str | None = None
    keep_hourly: int | None = Field(default=None, ge=0, le=100000)
    keep_daily: int | None = Field(default=None, ge=0, le=100000)
    keep_weekly: int | None = Field(default=None, ge=0, le=100000)
    keep_monthly: int | None = Field(default=None, ge=0, le=100000)
    local: bool | None = None
    server: bool | None = None
    local_max_size: str | None = None
    free_space_margin: str | None = None
    wait_on_battery: bool | None = None
    forget_every: str | None = None
    prune_every: str | None = None
    check_every: str | None = None
    verify_every: str | None = None

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str] | None) -> list[str] | None:
        return _home_or_absolute(value, "paths")

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: list[str] | None) -> list[str] | None:
        return _text_items(value, "exclude patterns")

    @field_validator("interval", "retry_after", "forget_every", "prune_every", "check_every", "verify_every")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                times.parse_duration(value)
            except ValueError:
                raise ValueError("must be a duration like 90m, 1h, 1h30m, 3d, 2w or hourly") from None
        return value

    @field_validator("local_max_size", "free_space_margin")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)  # ValueError: "must be a size like 500M, 20G or 1T"
        return value

    def section(self) -> dict[str, Any]:
        """The keys set, as the agent's ``[snapshots]`` table spells them."""
        return self.model_dump(exclude_none=True)


class CollectorRules(_Part):
    """Which diagnostics collectors run, and log files to gather beside the built-in ones."""

    disabled: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,40}$")]] | None = None
    extra_log_globs: list[str] | None = None

    @field_validator("extra_log_globs")
    @classmethod
    def _globs(cls, value: list[str] | None) -> list[str] | None:
        return _home_or_absolute(value, "extra log globs")


class ConsentRules(_Part):
    """How the PC's user is asked: how long a request waits for their answer at most (never past its expiry)."""

    wait_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)


class PolicyBody(_Part):
    """A group's policy. ``unattended`` names the only requests that may run without the user's approval."""

    snapshots: SnapshotRules | None = None
    #: How much each of the group's PCs may keep in its repository on the server (instead of [snapshots] quota_bytes).
    server_quota: str | None = None
    escrow: bool | None = None
    collectors: CollectorRules | None = None
    consent: ConsentRules | None = None
    unattended: list[str] = Field(default_factory=list)

    @field_validator("server_quota")
    @classmethod
    def _quota(cls, value: str | None) -> str | None:
        if value is not None and parse_size(value) < 1:
            raise ValueError("must be a size like 500M, 20G or 1T")
        return value

    def server_quota_bytes(self) -> int | None:
        return size_bytes(self.server_quota) if self.server_quota is not None else None

    @field_validator("unattended")
    @classmethod
    def _unattended(cls, value: list[str]) -> list[str]:
        allowed = ("restore", "diagnostics")
        for item in value:
            if str(item).strip().lower() in _NEVER_UNATTENDED:
                raise ValueError(f"{item!r} can never run unattended: a shell or remote session always needs the "
                                 f"user at the PC to approve it")
            if item not in allowed:
                raise ValueError(f"{str(item)[:40]!r} is not something that can run unattended "
                                 f"(only {' and '.join(allowed)})")
        return sorted(set(value))

    def allows_unattended(self, kind: str) -> bool:
        return kind in ("restore", "diagnostics") and kind in self.unattended


def read_policy(data: Any, *, source: str = "The policy") -> PolicyBody:
    """``data`` (a parsed TOML or JSON document) as a checked policy; InvalidInputError naming the first problem."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must be a table of settings (TOML) or an object (JSON).")
    try:
        return PolicyBody.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{source} is refused: {describe_invalid(exc.errors())}",
                                hint="See `helpline policy set --help` for what a policy may say.") from None


# --- the signed statement -------------------------------------------------------------------------


class PolicyStatement(BaseModel):
    """What the server signs for one PC: its group's policy at one version."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    agent_id: str = Field(min_length=1, max_length=64)
    group: GroupName
    version: int = Field(ge=1)
    body: dict[str, Any]
    issued_at: datetime

    @field_validator("issued_at", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a time zone")
        return value.astimezone(timezone.utc)

    def policy(self) -> PolicyBody:
        return read_policy(self.body, source=f"Policy version {self.version} of group {self.group}")


class SignedPolicy(BaseModel):
    """A statement as it travels: the exact payload the server signed and the base64 signature."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    payload: dict[str, Any]
    signature: str = Field(max_length=200)


def _signed_payload(payload: dict[str, Any]) -> dict[str, Any]:
    # The purpose keeps a policy signature from being valid as any other server signature, and back.
    return {"purpose": POLICY_PURPOSE, "policy": payload}


def sign_policy(server_key: Ed25519PrivateKey, statement: PolicyStatement) -> SignedPolicy:
    payload = statement.model_dump(mode="json")
    return SignedPolicy(payload=payload, signature=sign(server_key, _signed_payload(payload)))


def verify_policy(signed: SignedPolicy, *, pinned_server_key: str | Ed25519PublicKey, agent_id: str,
                  running: PolicyStatement | None = None) -> PolicyStatement:
    """The statement, if the pinned server key signed it for this PC and it is not older than ``running``.

    AuthError for a bad signature or a downgrade (an older version of the same
    group, or another group's policy issued before the one running);
    ForbiddenError for a statement naming another PC; InvalidInputError for one
    this version cannot read.
    """
    if not signed_by(pinned_server_key, _signed_payload(signed.payload), signed.signature):
        raise AuthError("The policy is not signed by this PC's server: refused.")
    try:
        statement = PolicyStatement.model_validate(signed.payload)
    except ValidationError as exc:
        raise InvalidInputError(f"The policy is unreadable: {describe_invalid(exc.errors())}") from None
    if statement.agent_id != agent_id:
        raise ForbiddenError("The policy is for another PC: refused.")
    statement.policy()  # raises InvalidInputError for a body this version cannot read
    if running is not None:
        if statement.group == running.group and statement.version < running.version:
            raise AuthError(f"Policy version {statement.version} of group {statement.group} is older than version "
                            f"{running.version} this PC runs: refused (no downgrade).")
        if statement.group != running.group and statement.issued_at <= running.issued_at:
            raise AuthError(f"A policy of group {statement.group} issued before the policy this PC runs: refused "
                            f"(no downgrade).")
        if (statement.group == running.group and statement.version == running.version
                and statement.body != running.body):
            raise AuthError(f"Policy version {statement.version} of group {statement.group} differs from the one "
                            f"this PC runs under the same version: refused.")
    return statement


# --- the wire -----------------------------------------------------------------------------------


class PolicyPublic(_Model):
    """One version of a group's policy as admins and engineers see it."""

    group: str
    version: int
    body: dict[str, Any]
    created_by: str
    created_at: datetime
    #: How many of the group's PCs report running this version, and how many run an older one (or none).
    agents_current: int = 0
    agents_behind: int = 0


class PolicyCheckIn(_Model):
    """What a PC says when it asks for its policy: the version it runs (None: none yet)."""

    running: int | None = Field(default=None, ge=1)


class PolicyCheckInAnswer(BaseModel):
    """The server's answer: the PC's group's current policy when it differs from the one the PC runs."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    current_version: int | None = None
    policy: SignedPolicy | None = None
