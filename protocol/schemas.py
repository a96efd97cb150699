"""Wire schemas of the `/v1` API, shared by the server and its clients.

Models are split per use (Create / Update / Public) so that secrets such as
password hashes or token hashes can never leak into a response.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from protocol.errors import InvalidInputError

API_PREFIX = "/v1"


class Role(StrEnum):
    ENGINEER = "engineer"
    ADMIN = "admin"


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class AgentStatus(StrEnum):
    """Where an agent stands: only an active agent's credential reaches ticket data."""

    ACTIVE = "active"
    PENDING = "pending"  # enrolled looking like an existing agent; an admin approves or refuses it
    REFUSED = "refused"  # an admin refused the pending agent: revoked
    REVOKED = "revoked"  # an admin revoked the agent: its credential stops working
    QUARANTINED = "quarantined"  # its identity ran on two PCs at once (or its token was revoked): refused until released
    RETIRED = "retired"  # decommissioned (or replaced by a re-imaged PC's new agent): its credential ended


class ProtectionState(StrEnum):
    """Whether a PC's snapshots protect it (protocol.snapshots.ProtectionStatus words it for people)."""

    PROTECTED = "protected"
    STALE = "stale"  # no good snapshot for too long
    NEVER = "never"  # no snapshot yet
    FAILING = "failing"  # the last run failed, or the last sample restore did not match
    UNVERIFIED = "unverified"  # no verified sample restore for too long


class TicketSort(StrEnum):
    NEWEST = "newest"  # highest number first
    DUE = "due"  # unanswered open tickets by first-response due time, soonest (or most overdue) first; then the rest


class Channel(StrEnum):
    ENGINEER = "engineer"  # opened by an engineer on someone's behalf
    SELF_SERVICE = "self-service"  # opened from the user's PC
    PHONE = "phone"
    EMAIL = "email"


Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def _check_text(value):
    """Refuse NUL characters and lone surrogates anywhere in a value: no database stores them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("must be valid Unicode text") from exc
    elif isinstance(value, list | tuple):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    return value


class _Model(BaseModel):
    # Schemas are built on first use: a PC's command loads many models and validates few. The server builds
    # every protocol model before its routes load (server/api/__init__.py).
    model_config = ConfigDict(defer_build=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value):
        return _check_text(value)


Model = TypeVar("Model", bound=BaseModel)


def describe_invalid(errors: list[Any]) -> str:
    """One line naming the first problem of a validation error list (pydantic's ``errors()``), in plain English, as the server says it."""
    from protocol.validation import describe

    return describe(errors)


def parse_input(model: type[Model], **fields: Any) -> Model:
    """Given what a person typed, return the request ``model``; raise InvalidInputError worded as the server would."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInputError(describe_invalid(exc.errors())) from None


class StatusMessage(_Model):
    """The answer of a call that changes something and has nothing else to return."""

    status: str


class ErrorDetail(_Model):
    code: str
    message: str
    hint: str | None = None


class ErrorBody(_Model):
    error: ErrorDetail


# --- server -----------------------------------------------------------------


class ServerInfo(_Model):
    name: str = "helpline"
    version: str
    api_version: int
    public_key: str = Field(description="The server's Ed25519 public key (base64) that agents pin.")
    fingerprint: str
    self_service: str = Field(description="Who may open tickets from a PC: off, enrolled or anyone.")
    max_bundle_bytes: int = Field(description="The largest diagnostics bundle the server accepts.")
    time: datetime


# --- accounts and login -----------------------------------------------------


class LoginRequest(_Model):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Password
    token_name: Annotated[str, StringConstraints(max_length=100)] = "cli"


class AccountPublic(_Model):
    username: str
    display_name: str
    email: str | None
    organisation: str | None
    role: Role
    disabled: bool
    created_at: datetime


class LoginResponse(_Model):
    token: str
    expires_at: datetime
    account: AccountPublic


#: The fewest characters a new password has, leading and trailing spaces not counted.
PASSWORD_MIN_LENGTH = 12
# Fewer different characters than this is a pattern ("aaaaaaaaaaaa", "abababababab"), not a password.
_PASSWORD_MIN_DISTINCT = 5


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why ``password`` is too weak to set for ``username``, in plain English; None if it will do.

    A new password needs at least 12 characters besides leading and trailing
    spaces, at least five different ones, and must not be the username.
    """
    core = password.strip()
    if not core:
        return "A password cannot be only spaces."
    if len(core) < PASSWORD_MIN_LENGTH:
        return f"A password needs at least {PASSWORD_MIN_LENGTH} characters (spaces at either end do not count)."
    if len(set(core.casefold())) < _PASSWORD_MIN_DISTINCT:
        return f"A password needs at least {_PASSWORD_MIN_DISTINCT} different characters, not a repeated pattern."
    if username and username.casefold() in (core.casefold(), core.casefold()[::-1]):
        return "A password cannot be the username."
    return None


def _strong_enough(password: str) -> str:
    """Refuse, in the policy's words, a new password that is weak whoever it is for (the username is checked later)."""
    problem = password_problem(password)
    if problem is not None:
        raise ValueError(problem)
    return password


#: A password being set: checked against :func:`password_problem` wherever it is parsed (the CLI before sending,
#: the server on receipt), and again with the username by the server.
NewPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_strong_enough)]


class AccountCreate(_Model):
    username: Username
    password: NewPassword
    role: Role = Role.ENGINEER
    display_name: ShortText | None = None
    email: Annotated[str, StringConstraints(max_length=254)] | None = None
    organisation: ShortText | None = None


class AccountUpdate(_Model):
    role: Role | None = None
    disabled: bool | None = None
    password: NewPassword | None = None
    display_name: ShortText | None = None
    email: Annotated[str, StringConstraints(max_length=254)] | None = None
    organisation: ShortText | None = None



class PasswordChange(_Model):
    """Changing one's own password: the current one proves it is the owner, not a borrowed token."""

    current_password: Password
    new_password: NewPassword


class PasswordChanged(_Model):
    ended_tokens: int = Field(description="How many of the account's other tokens the change ended.")


class ApiTokenPublic(_Model):
    """An engineer's or admin's API token, never its secret."""

    id: int
    account: str
    name: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    current: bool = Field(description="Whether this is the token the request was made with.")


class SshKeyCreate(_Model):
    public_key: Annotated[str, StringConstraints(min_length=20, max_length=16_384, strip_whitespace=True)]


class SshKeyPublic(_Model):
    id: int
    algorithm: str
    fingerprint: str
    comment: str
    created_at: datetime


# --- tickets ----------------------------------------------------------------


class TicketCreate(_Model):
    title: ShortText
    description: LongText = ""
    requester: Annotated[str, StringConstraints(max_length=200)] = ""
    priority: Priority = Priority.NORMAL
    channel: Channel = Channel.ENGINEER
    assignee: str | None = None


class TicketUpdate(_Model):
    status: TicketStatus | None = None
    assignee: str | None = Field(default=None, description="Username, or an empty string to unassign.")
    priority: Priority | None = None
    title: ShortText | None = None


class NoteCreate(_Model):
    message: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class TimelineEntry(_Model):
    at: datetime
    actor: str
    kind: str
    message: str


class TicketPublic(_Model):
    number: str
    title: str
    description: str
    requester: str
    priority: Priority
    status: TicketStatus
    assignee: str | None
    channel: Channel
    created_at: datetime
    updated_at: datetime
    first_response_due: datetime
    first_responded_at: datetime | None


class TicketDetail(TicketPublic):
    agents: list[str]
    timeline: list[TimelineEntry]
    bundles: list[BundlePublic] = []
    attachments: list[AttachmentPublic] = []


#: The largest file a user may attach to a reply (its base64 form must fit the server's 1 MiB request limit).
MAX_ATTACHMENT_BYTES = 512 * 1024


class AttachmentUpload(_Model):
    """A small file sent with a reply: its name on the PC (made safe by the server) and its bytes in base64."""

    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content: str = Field(description=f"The file's bytes, base64 (standard alphabet, padded); at most {MAX_ATTACHMENT_BYTES} bytes decoded.")

    @field_validator("content")
    @classmethod
    def _at_most_the_limit(cls, value: str) -> str:
        # Checked here rather than as a schema maxLength: the request limit bounds it anyway, and the server
        # checks the decoded size again with a clear refusal.
        if len(value) > (MAX_ATTACHMENT_BYTES + 2) // 3 * 4:
            raise ValueError(f"the file is over {MAX_ATTACHMENT_BYTES // 1024} KiB")
        return value


class ReplyCreate(_Model):
    """What a user adds to their ticket from the PC: a message, and perhaps one small file."""

    message: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    attachment: AttachmentUpload | None = None


class AttachmentPublic(_Model):
    id: str
    ticket: str
    hostname: str = Field(description="The PC it came from.")
    filename: str = Field(description="One safe file name (the server replaced anything unsafe in the PC's name).")
    size: int
    sha256: str
    created_at: datetime


class PairingCodeCreated(_Model):
    code: str
    ticket: str
    expires_at: datetime


# --- enrollment and agents --------------------------------------------------


def _network(text: str) -> str:
    """``text`` as a CIDR network (``10.0.0.0/8``; a bare address is one host), or ValueError."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"'{text}' is not a network (like 10.0.0.0/8 or 2001:db8::/32)") from None


class EnrollmentTokenCreate(_Model):
    group: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "default"
    expires_in_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    max_uses: int = Field(default=1, ge=1, le=100_000)
    note: Annotated[str, StringConstraints(max_length=200)] = ""
    networks: list[Annotated[str, StringConstraints(max_length=50), AfterValidator(_network)]] = Field(
        default_factory=list, max_length=50, description="Networks (CIDR) PCs may enroll from with it; empty: any.")


class EnrollmentTokenPublic(_Model):
    id: int
    group: str
    note: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    max_uses: int
    uses: int
    last_used_at: datetime | None
    revoked: bool
    networks: list[str] = Field(default_factory=list, description="Networks PCs may enroll from with it; empty: any.")
    last_used_by: str | None = Field(default=None, description="The agent it last enrolled.")
    last_used_by_hostname: str | None = Field(default=None, description="That PC's host name (its own claim: untrusted).")
    agents: int = Field(default=0, description="Agents it enrolled (each new key counts once).")


class EnrollmentTokenCreated(EnrollmentTokenPublic):
    token: str


class EnrollmentTokenRevoked(EnrollmentTokenPublic):
    quarantined: list[str] = Field(default_factory=list, description="The agents quarantined with it.")


class AgentIdentity(_Model):
    """What a PC says about itself when it enrolls, pairs or asks for help."""

    public_key: Annotated[str, StringConstraints(min_length=40, max_length=64)]
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    os: Annotated[str, StringConstraints(max_length=200)] = ""
    agent_version: Annotated[str, StringConstraints(max_length=50)] = ""
    machine_id: Annotated[str, StringConstraints(max_length=128)] = ""


class EnrollRequest(_Model):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    identity: AgentIdentity
    signature: str = Field(description="The agent's signature of {purpose: 'enroll', token, identity}.")


class AgentCredential(_Model):
    """What the server hands an agent: its id, a credential and the key to pin."""

    agent_id: str
    credential: str | None = Field(description="Absent when the agent already holds a credential.")
    group: str | None
    server_public_key: str
    server_signature: str = Field(description="The server's signature of {purpose: 'agent', agent_id, public_key}.")
    status: AgentStatus = Field(default=AgentStatus.ACTIVE,
                                description="'pending' until an admin approves a PC that enrolled looking like another agent.")


class PairRequest(_Model):
    code: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    identity: AgentIdentity
    signature: str = Field(description="The agent's signature of {purpose: 'pair', code, identity}.")


class AgentTicket(_Model):
    """A ticket as the user of a paired PC sees it."""

    number: str
    title: str
    status: TicketStatus
    priority: Priority
    assignee: str | None
    created_at: datetime
    first_response_due: datetime
    first_responded_at: datetime | None
    timeline: list[TimelineEntry]


class PairResponse(_Model):
    ticket: AgentTicket
    agent: AgentCredential


class SelfServiceRequest(_Model):
    title: ShortText
    description: LongText = ""
    requester: Annotated[str, StringConstraints(max_length=200)] = ""
    identity: AgentIdentity | None = None
    signature: str | None = None


class SelfServiceResponse(_Model):
    ticket: AgentTicket
    agent: AgentCredential | None = None
    response_minutes: int


class AgentPublic(_Model):
    id: str
    hostname: str
    os: str
    agent_version: str
    group: str | None
    fingerprint: str
    enrolled: bool
    created_at: datetime
    last_seen_at: datetime | None
    tickets: list[str]
    status: AgentStatus = AgentStatus.ACTIVE
    resembles: str | None = Field(default=None, description="The agent a pending PC looked like when it enrolled (evidence).")
    evidence: str = Field(default="", description="What it shared with that agent, e.g. 'same machine id and hostname'.")
    revoked_at: datetime | None = None
    protection: ProtectionState | None = Field(default=None, description="Whether its snapshots protect it.")
    protection_words: str = Field(default="", description="The same in plain words, e.g. 'Protected: last snapshot "
                                                          "40 minutes ago; last verified restore yesterday'.")
    last_snapshot_at: datetime | None = None
    # Policies and protocol versions (server/fleet/policies.py): the group policy version the agent runs, its
    # group's current one (None: the group has no policy), and the protocol version of its last request.
    policy_version: int | None = None
    current_policy_version: int | None = None
    protocol_version: int | None = None
    quarantined_at: datetime | None = None
    quarantine_reason: str = ""
    retired_at: datetime | None = None
    replaced_by: str | None = Field(default=None, description="The agent of the re-imaged PC that took this one's place.")
    replaces: str | None = Field(default=None, description="The agent this one replaced (its server-side snapshots stay "
                                                           "readable by this one).")
    enrolled_by_token: int | None = None
    problems: list[str] = Field(default_factory=list, description="What needs a look, in short words: offline, not "
                                                                  "protected, quarantined, pending, policy behind.")


class AgentDecision(_Model):
    """An admin's approval, refusal or revocation of an agent, with the reason kept in the audit log."""

    reason: Annotated[str, StringConstraints(max_length=500, strip_whitespace=True)] = ""


class AgentReplace(AgentDecision):
    """An admin's decision that a (pending) agent is the re-imaged PC of ``replaces``: it takes over its history."""

    replaces: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class AgentRetire(AgentDecision):
    """Decommissioning a PC: its credential ends; its server-side data kept by retention, or deleted now."""

    delete_data: bool = False


class AuditEventPublic(_Model):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    ip: str | None
    details: dict


# --- uploads and bundles ----------------------------------------------------------

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class UploadCreate(_Model):
    filename: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,200}$")]
    size: int = Field(gt=0, description="Bytes of the whole file; checked against the server's limit before any data is sent.")
    sha256: Sha256Hex


class UploadStatus(_Model):
    id: str
    ticket: str
    filename: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    received: list[int]
    expires_at: datetime
    complete: bool
    bundle_id: str | None


class BundlePublic(_Model):
    id: str
    ticket: str
    hostname: str
    size: int
    sha256: str
    files: int
    created_at: datetime


class BundleDetail(BundlePublic):
    summary: dict
