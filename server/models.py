"""What the server keeps: accounts, tokens, tickets, agents, pairings, snapshot records and the audit log.

Secrets are never stored in the clear: passwords as scrypt hashes, API tokens
and agent credentials as SHA-256 digests, pairing codes and enrollment tokens
as keyed HMAC digests. Snapshot repository passwords a PC escrows are sealed
with a key derived from the server's signing key, which is not in the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db import Base, UTCDateTime, utcnow


class Counter(Base):
    """A named monotonic counter (ticket numbers), advanced inside a transaction."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str | None] = mapped_column(String(254))
    organisation: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(300), nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    ssh_keys: Mapped[list[SshKey]] = relationship(back_populates="account", cascade="all, delete-orphan")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    account: Mapped[Account] = relationship()


class SshKey(Base):
    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    algorithm: Mapped[str] = mapped_column(String(50), nullable=False)
    public_key: Mapped[str] = mapped_column(Text, nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(100), nullable=False)
    comment: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    account: Mapped[Account] = relationship(back_populates="ssh_keys")


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    requester: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    priority: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    channel: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    first_response_due: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    first_responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    assignee: Mapped[Account | None] = relationship()
    events: Mapped[list[TimelineEvent]] = relationship(
        back_populates="ticket", order_by="TimelineEvent.id", cascade="all, delete-orphan"
    )
    pairings: Mapped[list[Pairing]] = relationship(back_populates="ticket", cascade="all, delete-orphan")

    @property
    def label(self) -> str:
        return f"T-{self.number}"


class TimelineEvent(Base):
    __tablename__ = "timeline_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)

    ticket: Mapped[Ticket] = relationship(back_populates="events")


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    machine_id: Mapped[str] = mapped_column(String(128), default="", nullable=False, index=True)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    os: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    agent_version: Mapped[str] = mapped_column(String(50), default="", nullable=False)
    group: Mapped[str | None] = mapped_column(String(64))
    enrolled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # active | pending | refused | revoked | quarantined | retired (protocol.schemas.AgentStatus); only active agents reach ticket data.
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active", nullable=False)
    # Evidence, not identity: the agent a pending PC looked like at enrollment, and what they shared.
    # A plain id (no foreign key): the record stays readable if that agent is ever removed.
    resembles_id: Mapped[str | None] = mapped_column(String(36))
    evidence: Mapped[str] = mapped_column(String(200), default="", server_default="", nullable=False)

    # Fleet identity (server/fleet/): which token enrolled it, quarantine of a cloned identity, retirement,
    # and the re-imaged PC's replacement link. Plain ids (no foreign keys): the record outlives the rows.
    enrolled_by_token_id: Mapped[int | None] = mapped_column(Integer, index=True)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quarantine_reason: Mapped[str] = mapped_column(String(500), default="", server_default="", nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replaced_by_id: Mapped[str | None] = mapped_column(String(36))  # on the old agent: the one that took over
    replaces_id: Mapped[str | None] = mapped_column(String(36), index=True)  # on the new agent: the one it replaced
    # The agent process family (one installation on one boot) last seen signing for this agent, and the one
    # before it: two families alternating within [fleet] clone_window are one identity running twice.
    instance_id: Mapped[str | None] = mapped_column(String(64))
    instance_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    previous_instance_id: Mapped[str | None] = mapped_column(String(64))
    previous_instance_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    pairings: Mapped[list[Pairing]] = relationship(back_populates="agent", cascade="all, delete-orphan")

    # Policies and protocol versions (server/fleet/policies.py, server/protocol_version.py): the version of its
    # group's policy the agent reports running (None: none yet), and the protocol version of its last request.
    policy_version: Mapped[int | None] = mapped_column(Integer)
    protocol_version: Mapped[int | None] = mapped_column(Integer)


class Pairing(Base):
    __tablename__ = "pairings"
    __table_args__ = (UniqueConstraint("ticket_id", "agent_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    via: Mapped[str] = mapped_column(String(20), nullable=False)

    ticket: Mapped[Ticket] = relationship(back_populates="pairings")
    agent: Mapped[Agent] = relationship(back_populates="pairings")


class PairingCode(Base):
    __tablename__ = "pairing_codes"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by_agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))

    ticket: Mapped[Ticket] = relationship()


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    group: Mapped[str] = mapped_column(String(64), nullable=False)
    note: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    max_uses: Mapped[int] = mapped_column(Integer, nullable=False)
    uses: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Fleet identity: the networks (CIDR) it may be used from (empty: any), and the last agent it enrolled
    # (its hostname is the PC's own claim: untrusted text).
    networks: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    last_used_by_agent_id: Mapped[str | None] = mapped_column(String(36))
    last_used_by_hostname: Mapped[str | None] = mapped_column(String(255))

    created_by: Mapped[Account | None] = relationship()


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_target", "target_type", "target_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
    actor_type: Mapped[str] = mapped_column(String(20), nullable=False)
    actor_id: Mapped[str] = mapped_column(String(100), nullable=False)
    action: Mapped[str] = mapped_column(String(100), nullable=False)
    target_type: Mapped[str] = mapped_column(String(50), nullable=False)
    target_id: Mapped[str] = mapped_column(String(100), nullable=False)
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)


class RateLimitWindow(Base):
    """Failed attempts counted per key (``login-user:alice``, ``pair-ip:1.2.3.4``) in a fixed window."""

    __tablename__ = "rate_limit_windows"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)


class Upload(Base):
    """A resumable upload of one bundle: chunks arrive in any order, then it is completed."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    chunk_size: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bundle_id: Mapped[str | None] = mapped_column(String(36))

    ticket: Mapped[Ticket] = relationship()
    chunks: Mapped[list[UploadChunk]] = relationship(back_populates="upload", cascade="all, delete-orphan", order_by="UploadChunk.index")


class UploadChunk(Base):
    __tablename__ = "upload_chunks"
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)

    upload: Mapped[Upload] = relationship(back_populates="chunks")


class Bundle(Base):
    """A diagnostics bundle stored in the blob store, with its summary for triage."""

    __tablename__ = "bundles"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False, index=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    blob_key: Mapped[str] = mapped_column(String(512), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    files: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # Deferred: only the bundle's own page reads it, through a path that survives whatever was stored.
    summary: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False, deferred=True)

    ticket: Mapped[Ticket] = relationship()


class Attachment(Base):
    """A small file a user sent with a reply from their PC, kept in the blob store under its id."""

    __tablename__ = "attachments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False, index=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)  # made one safe path component on arrival
    blob_key: Mapped[str] = mapped_column(String(512), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    ticket: Mapped[Ticket] = relationship()


class JobRun(Base):
    """One run of a background job: which process ran it, when, and how it ended."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_started", "job", "started_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64), nullable=False)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)  # running | ok | failed
    detail: Mapped[str] = mapped_column(Text, default="", nullable=False)


class AgentNonce(Base):
    """A signed agent request's nonce, kept until its date leaves the clock-skew window so a replay is refused."""

    __tablename__ = "agent_nonces"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class RemoteSession(Base):
    """A remote session: offered by a PC on a ticket, asked for by an engineer, approved by the user, relayed.

    The grant the server signed is kept as sent (payload and signature), so what the
    PC was shown can be checked later; its nonce is in the payload and never shown to
    other engineers (``SessionPublic`` carries no grant).
    """

    __tablename__ = "remote_sessions"
    __table_args__ = (Index("ix_remote_sessions_agent_state", "agent_id", "state"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False, index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    username: Mapped[str] = mapped_column(String(200), nullable=False)
    platform: Mapped[str] = mapped_column(String(100), default="", nullable=False)
    host_key: Mapped[str] = mapped_column(Text, nullable=False)
    host_key_fingerprint: Mapped[str] = mapped_column(String(100), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    offer_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    event_seq: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    grant_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    grant_payload: Mapped[dict | None] = mapped_column(JSON)
    grant_signature: Mapped[str | None] = mapped_column(String(200))
    engineer_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    engineer_username: Mapped[str | None] = mapped_column(String(64))
    scopes: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    grant_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_duration_seconds: Mapped[int | None] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(200))
    bytes_to_pc: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    bytes_from_pc: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    recording_key: Mapped[str | None] = mapped_column(String(512))
    recording_size: Mapped[int | None] = mapped_column(BigInteger)
    recording_sha256: Mapped[str | None] = mapped_column(String(64))
    recording_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    ticket: Mapped[Ticket] = relationship()
    agent: Mapped[Agent] = relationship()
    engineer: Mapped[Account | None] = relationship()


class SessionEventRow(Base):
    """What the PC's `helpline session` learns by long-polling: a request to consent, chat, a cancel, the end."""

    __tablename__ = "session_events"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("remote_sessions.id", ondelete="CASCADE"), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    details: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)


class SessionChat(Base):
    """One chat message of a session, from the engineer or the user."""

    __tablename__ = "session_chat"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("remote_sessions.id", ondelete="CASCADE"), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    sender: Mapped[str] = mapped_column(String(20), nullable=False)  # engineer | user
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)


class RelayToken(Base):
    """A one-time pass to one side of a session's relay: stored hashed, short-lived, bound to who asked for it."""

    __tablename__ = "relay_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("remote_sessions.id", ondelete="CASCADE"), nullable=False, index=True)
    side: Mapped[str] = mapped_column(String(20), nullable=False)  # pc | engineer
    principal: Mapped[str] = mapped_column(String(100), nullable=False)  # the agent id, or the engineer's username
    grant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PcRequestRow(Base):
    """An engineer's request to one PC (protocol.pc_requests), signed by the server key when it was made.

    ``payload`` is the exact signed payload the PC checks; the other columns say
    where the request stands, as the PC reported it (untrusted text) or as the
    server decided (expired).
    """

    __tablename__ = "pc_requests"
    __table_args__ = (Index("ix_pc_requests_agent_state", "agent_id", "state"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    params: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"), index=True)
    # A replacement restore reads this other PC's server-side repository (a plain id: the record outlives it).
    source_agent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    requested_by: Mapped[str] = mapped_column(String(64), nullable=False)
    requested_by_name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    nonce: Mapped[str] = mapped_column(String(64), nullable=False)
    unattended: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)
    signature: Mapped[str] = mapped_column(String(200), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    progress: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="", nullable=False)
    result: Mapped[dict | None] = mapped_column(JSON)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    agent: Mapped[Agent] = relationship()
    ticket: Mapped[Ticket | None] = relationship()


class ResticRepository(Base):
    """An agent's server-side restic repository: its usage (for the quota) and the prune fence.

    While ``fenced_at`` is set the server is about to prune (or is pruning) and
    the agent may only read and remove its own locks: see docs/threat-model.md.
    """

    __tablename__ = "restic_repositories"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)  # live objects plus reservations
    fenced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ResticObject(Base):
    """One file of a restic repository: config, or data/keys/locks/snapshots/index named by its SHA-256.

    ``trashed_at`` set: deleted by the server's prune, kept in the blob store until the trash is emptied.
    """

    __tablename__ = "restic_objects"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    type: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(10), nullable=False)  # the mode of the credential: append | admin
    trashed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class ResticCredential(Base):
    """A short-lived credential for one agent's repository (HTTP Basic), its secret stored as a SHA-256 digest."""

    __tablename__ = "restic_credentials"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    repository_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True)
    # The agent it was issued to; None for the server's own (admin) credential.
    issued_to: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(10), nullable=False)  # protocol.snapshots.RepositoryMode
    purpose: Mapped[str] = mapped_column(String(20), nullable=False)  # backup | check | restore | prune
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class SnapshotRun(Base):
    """One snapshot run a PC reported (successful or not); the newest few hundred are kept per PC."""

    __tablename__ = "snapshot_runs"
    __table_args__ = (Index("ix_snapshot_runs_agent_finished", "agent_id", "finished_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    repository: Mapped[str] = mapped_column(String(20), nullable=False)  # local | server
    status: Mapped[str] = mapped_column(String(20), nullable=False)  # ok | partial | failed
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    paths: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    files_new: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    files_changed: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    files_unmodified: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    total_files: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    bytes_added: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    warnings: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RestoreCheck(Base):
    """One sample restore a PC made from a snapshot and compared by hash (a verified restore, or a failed one)."""

    __tablename__ = "restore_checks"
    __table_args__ = (Index("ix_restore_checks_agent_at", "agent_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    repository: Mapped[str] = mapped_column(String(20), nullable=False)
    snapshot_id: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    files_checked: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bytes_checked: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    detail: Mapped[str] = mapped_column(Text, default="", nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Protection(Base):
    """A PC's snapshot standing, summed up from its reports as they arrive (one row per PC that reported).

    ``state`` is the state last recorded in the audit log: a report or the
    protection watch compares it with the state worked out now, and a change is
    audited once.
    """

    __tablename__ = "protection"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    first_snapshot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_snapshot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_snapshot_id: Mapped[str | None] = mapped_column(String(64))
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_status: Mapped[str | None] = mapped_column(String(20))
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last sample restore that matched
    last_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last sample restore, matched or not
    last_check_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_check_detail: Mapped[str] = mapped_column(Text, default="", nullable=False)
    state: Mapped[str] = mapped_column(String(20), default="never", nullable=False)
    state_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EscrowedPassword(Base):
    """A PC's server-repository password, sealed (envelope: a data key under the server's escrow key, AES-GCM).

    Nothing here opens without the server's signing key, which is not in the
    database; each seal is bound to its agent, so a row copied to another agent
    does not open.
    """

    __tablename__ = "escrowed_passwords"
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)  # which escrow key sealed the data key
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # nonce + AES-GCM(data key)
    sealed_password: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # nonce + AES-GCM(password)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class GroupPolicy(Base):
    """One version of a group's policy (server/fleet/policies.py): versions grow by one per group, never change."""

    __tablename__ = "group_policies"
    __table_args__ = (UniqueConstraint("group", "version", name="uq_group_policies_group_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    body: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


# --- webhooks (fleet issue, hooks) --------------------------------------------------------------


class WebhookEndpoint(Base):
    """A URL an admin registered for some event kinds; its signing secret is sealed, never stored in the clear.

    The secret must be readable by the server (it signs every delivery with it), so it cannot be only hashed:
    it is sealed (AES-256-GCM) with a key derived from the server's signing key, bound to the endpoint's id.
    """

    __tablename__ = "webhook_endpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    events: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    description: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)  # which webhook key sealed the secret
    sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # nonce + AES-GCM(secret); set right after insert
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class WebhookEvent(Base):
    """One event in the outbox, written in the transaction of the change it tells of."""

    __tablename__ = "webhook_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    subject: Mapped[str] = mapped_column(String(100), default="", nullable=False)  # e.g. the ticket's label
    payload: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)

    __table_args__ = (Index("ix_webhook_events_kind_subject", "kind", "subject"),)


class WebhookDelivery(Base):
    """One event on its way to one endpoint: pending (with its next attempt), delivered or failed."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False, index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False,
                                             index=True)
    state: Mapped[str] = mapped_column(String(20), nullable=False)  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="", nullable=False)  # the receiver's words: untrusted text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    event: Mapped[WebhookEvent] = relationship()
    endpoint: Mapped[WebhookEndpoint] = relationship()

    __table_args__ = (Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),)
class RelayRoute(Base):
    """Which server process splices a session's relay: the one the first side reached (several processes as one).

    The process a side reaches records itself here when nobody live holds the
    session, or forwards the side to the process that does (server.relay.forward).
    A route lapses at ``expires_at`` (a process that died holds nothing for long)
    and is deleted when its splice ends.
    """

    __tablename__ = "relay_routes"
    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    replica_url: Mapped[str] = mapped_column(String(500), nullable=False)  # the holder's [bus] advertise_url
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
