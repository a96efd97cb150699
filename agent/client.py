"""The typed client of the `/v1` API: one method per endpoint, protocol models in and out.

This is the only module that knows the API's paths. Every value that goes into
a path is checked and encoded here, so a ticket reference, a username or an id
can never add a path segment or a query string; every answer is validated
against its protocol model before anyone reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter, ValidationError

from agent.http import AgentSigner, ServerConnection
from protocol.errors import Audience, InvalidInputError, NotFoundError, UnavailableError
from protocol.schemas import (
    AccountCreate,
    AccountPublic,
    AccountUpdate,
    AgentCredential,
    AgentDecision,
    AgentReplace,
    AgentRetire,
    AgentPublic,
    AgentStatus,
    AgentTicket,
    ApiTokenPublic,
    AuditEventPublic,
    BundleDetail,
    BundlePublic,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollmentTokenRevoked,
    EnrollRequest,
    LoginRequest,
    LoginResponse,
    NoteCreate,
    PairingCodeCreated,
    PairRequest,
    PairResponse,
    PasswordChange,
    PasswordChanged,
    ProtectionState,
    ReplyCreate,
    SelfServiceRequest,
    SelfServiceResponse,
    ServerInfo,
    SshKeyCreate,
    SshKeyPublic,
    StatusMessage,
    TicketCreate,
    TicketDetail,
    TicketPublic,
    TicketSort,
    TicketStatus,
    TicketUpdate,
    UploadCreate,
    UploadStatus,
)
from protocol.policy import PolicyBody, PolicyCheckIn, PolicyCheckInAnswer, PolicyPublic
from protocol.key_handover import Handover, KeyRotated
from protocol.tickets import canonical_ticket
from protocol.version import POLICIES_SINCE

if TYPE_CHECKING:
    import httpx

    from protocol.hand_over import HandOverRequest, HandOverResponse
    from protocol.pc_requests import PcRequestCreate, PcRequestPublic, PcRequestUpdate, SignedPcRequest
    from protocol.sessions import (
        ChatEntry,
        ChatMessage,
        ConsentAnswer,
        GrantIssued,
        GrantRequest,
        RelayTicket,
        ScopeChange,
        SessionEnd,
        SessionEvent,
        SessionOffer,
        SessionPublic,
        SessionState,
    )
    from protocol.snapshots import (
        CredentialRequest,
        EscrowPut,
        ProtectionStatus,
        RepositoryCredential,
        SnapshotReport,
        VerifyReport,
    )
    from protocol.webhooks import WebhookCreate, WebhookCreated, WebhookDeliveryPublic, WebhookPublic

TicketRef = str | int  # T-1042, t-1042, #1042, 1042, or the number itself

_MAX_SEGMENT = 200


class ServerTooOldError(NotFoundError):
    """A route this client needs is missing on a server of an older protocol version: the server needs upgrading."""
_adapter = lru_cache(maxsize=None)(TypeAdapter)  # building an adapter is slow; there are few answer types


@lru_cache(maxsize=None)
def _models(module: str) -> ModuleType:
    """The protocol module of the models only some calls use (sessions, PC requests, snapshots, webhooks,
    hand-overs), imported on the first such call: `helpline share` makes none and need not load them."""
    return importlib.import_module(f"protocol.{module}")


def _segment(value: str, what: str, hints: Mapping[Audience, str] | None = None) -> str:
    """``value`` as one encoded path segment; InvalidInputError if it could be read as anything more."""
    if (not isinstance(value, str) or not value or len(value) > _MAX_SEGMENT or value in (".", "..")
            or any(c in "/\\?#%" or not c.isprintable() for c in value)):
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"{shown!r} is not a valid {what}.", hints=hints)
    return quote(value, safe="")


def _row_id(value: int, what: str) -> str:
    """A numeric id as a path segment; InvalidInputError for anything but a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{value!r} is not a valid {what}.")
    return str(value)


def _agent(agent_id: str) -> str:
    return _segment(agent_id, "agent id", hints={Audience.ENGINEER: "List agents with `helpline agent list`."})


def _ticket(reference: TicketRef) -> str:
    return quote(canonical_ticket(reference), safe="")


def _session(session_id: str) -> str:
    return _segment(session_id, "session id", hints={Audience.ENGINEER: "List sessions with `helpline sessions`."})


def _wait(wait: float | None) -> dict[str, Any]:
    """The query and the per-request timeout of a long poll that the server may hold ``wait`` seconds."""
    if wait is None:
        return {}
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 300:
        raise InvalidInputError(f"{wait!r} is not a number of seconds to wait.")
    return {"params": {"wait": int(wait)}, "timeout": int(wait) + 30.0}


def _after(after: int) -> int:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidInputError(f"{after!r} is not a sequence number.")
    return after


def _body(model: BaseModel) -> dict:
    """A request model as JSON; unset optional fields (None) stay off the wire, as the server reads them as absent."""
    return model.model_dump(mode="json", exclude_none=True)


class HelplineClient:
    """One server and one principal (an engineer's token, this PC's agent signing its requests, or nobody), typed calls."""

    def __init__(self, connection: ServerConnection):
        self.connection = connection
        if connection.agent is not None:  # an answer signed by a key this PC does not know: follow the hand-overs
            connection.handovers = self.key_handovers

    @classmethod
    def connect(cls, base_url: str, token: str | None = None, *, agent: AgentSigner | None = None,
                timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> HelplineClient:
        """A client for the server at ``base_url`` (ConfigError if the address is unusable).

        With ``agent``, every request is signed by this PC's key and every answer
        must be signed by the server key the PC pinned (UnverifiedAnswerError).
        """
        return cls(ServerConnection(base_url, token, agent=agent, timeout=timeout, transport=transport))

    @property
    def base_url(self) -> str:
        return self.connection.base_url

    @property
    def pinned_server_key(self) -> str | None:
        """The server key this PC's agent trusts now (after following a hand-over, the new one); None for others."""
        return self.connection.agent.server_public_key if self.connection.agent is not None else None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> HelplineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------

    def _call(self, answer: Any, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request and return its answer validated as ``answer`` (a model or a type)."""
        data = self.connection.request(method, path, **kwargs)
        try:
            return _adapter(answer).validate_python(data)
        except ValidationError as exc:
            raise UnavailableError(
                f"{self.base_url} answered {method} {path} in a way this Helpline does not understand.",
                hint="Check the address; the server and this program may be of different versions.",
            ) from exc

    # --- the server ------------------------------------------------------------------

    def server_info(self) -> ServerInfo:
        """The server's version, limits and the public key agents pin."""
        return self._call(ServerInfo, "GET", "server")

    def key_handovers(self) -> list[Handover]:
        """Every hand-over from a retired server key to its successor (sent unsigned: each carries its signatures)."""
        return self._call(list[Handover], "GET", "server/key-handovers", unsigned=True)

    def rotate_server_key(self) -> KeyRotated:
        """Rotate the server's signing key (admins); agents follow the hand-over."""
        return self._call(KeyRotated, "POST", "server/key-rotations")

    # --- logging in, who am I, my SSH keys -----------------------------------------------

    def login(self, body: LoginRequest) -> LoginResponse:
        return self._call(LoginResponse, "POST", "auth/login", json=_body(body))

    def logout(self) -> StatusMessage:
        """Revoke the token this client carries."""
        return self._call(StatusMessage, "POST", "auth/logout")

    def me(self) -> AccountPublic:
        return self._call(AccountPublic, "GET", "me")

    def change_password(self, body: PasswordChange) -> PasswordChanged:
        """Change this account's password; its other tokens end, this client's stays."""
        return self._call(PasswordChanged, "POST", "me/password", json=_body(body))

    def my_tokens(self) -> list[ApiTokenPublic]:
        """This account's API tokens that still work, the one this client carries marked current."""
        return self._call(list[ApiTokenPublic], "GET", "me/tokens")

    def account_tokens(self, username: str) -> list[ApiTokenPublic]:
        """Another account's API tokens that still work (admins)."""
        name = _segment(username, "username", hints={Audience.ENGINEER: "Check the username; an admin can list the accounts.",
                                                     Audience.ADMIN: "List accounts with `helpline account list`."})
        return self._call(list[ApiTokenPublic], "GET", f"accounts/{name}/tokens")

    def revoke_token(self, token_id: int) -> ApiTokenPublic:
        """Revoke an API token: one's own, or anyone's for an admin."""
        return self._call(ApiTokenPublic, "DELETE", f"tokens/{_row_id(token_id, 'token id')}")

    def ssh_keys(self) -> list[SshKeyPublic]:
        return self._call(list[SshKeyPublic], "GET", "me/ssh-keys")

    def add_ssh_key(self, body: SshKeyCreate) -> SshKeyPublic:
        return self._call(SshKeyPublic, "POST", "me/ssh-keys", json=_body(body))

    def remove_ssh_key(self, key_id: int) -> StatusMessage:
        return self._call(StatusMessage, "DELETE", f"me/ssh-keys/{_row_id(key_id, 'SSH key id')}")

    # --- accounts (admins) --------------------------------------------------------------

    def accounts(self) -> list[AccountPublic]:
        return self._call(list[AccountPublic], "GET", "accounts")

    def create_account(self, body: AccountCreate) -> AccountPublic:
        return self._call(AccountPublic, "POST", "accounts", json=_body(body))

    def update_account(self, username: str, body: AccountUpdate) -> AccountPublic:
        name = _segment(username, "username", hints={Audience.ADMIN: "List accounts with `helpline account list`."})
        return self._call(AccountPublic, "PATCH", f"accounts/{name}", json=_body(body))

    # --- enrollment tokens (admins) and the fleet ----------------------------------------

    def create_enrollment_token(self, body: EnrollmentTokenCreate) -> EnrollmentTokenCreated:
        return self._call(EnrollmentTokenCreated, "POST", "enrollment-tokens", json=_body(body))

    def enrollment_tokens(self) -> list[EnrollmentTokenPublic]:
        return self._call(list[EnrollmentTokenPublic], "GET", "enrollment-tokens")

    def revoke_enrollment_token(self, token_id: int, *, quarantine_agents: bool = False) -> EnrollmentTokenRevoked:
        """Revoke an enrollment token (admins); with ``quarantine_agents`` also quarantine the agents it enrolled."""
        return self._call(EnrollmentTokenRevoked, "DELETE", f"enrollment-tokens/{_row_id(token_id, 'enrollment token id')}",
                          params={"quarantine_agents": "true"} if quarantine_agents else None)

    def agents(self, group: str | None = None, status: AgentStatus | None = None,
               protection: Sequence[ProtectionState] = (), problems: Sequence[str] = ()) -> list[AgentPublic]:
        """Agents, optionally of one fleet group, one status (pending ones await an admin), some protection states
        and some problems (offline, not protected, quarantined, pending)."""
        params: dict[str, Any] = {k: v for k, v in {"group": group, "status": AgentStatus(status).value if status else None}.items() if v}
        if protection:
            params["protection"] = [ProtectionState(p).value for p in protection]
        if problems:
            params["problem"] = list(problems)
        return self._call(list[AgentPublic], "GET", "agents", params=params or None)

    def agent(self, agent_id: str) -> AgentPublic:
        segment = _segment(agent_id, "agent id", hints={Audience.ENGINEER: "List agents with `helpline agent list`."})
        return self._call(AgentPublic, "GET", f"agents/{segment}")
    def approve_agent(self, agent_id: str, body: AgentDecision) -> AgentPublic:
        """Approve a pending agent (admins)."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/approve", json=_body(body))

    def refuse_agent(self, agent_id: str, body: AgentDecision) -> AgentPublic:
        """Refuse a pending agent, which revokes it (admins)."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/refuse", json=_body(body))

    def replace_agent(self, agent_id: str, body: AgentReplace) -> AgentPublic:
        """Make agent ``agent_id`` the re-imaged PC of ``body.replaces`` (admins); the old agent is retired."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/replace", json=_body(body))

    def retire_agent(self, agent_id: str, body: AgentRetire) -> AgentPublic:
        """Retire (decommission) an agent (admins)."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/retire", json=_body(body))

    def quarantine_agent(self, agent_id: str, body: AgentDecision) -> AgentPublic:
        """Quarantine an active agent (admins)."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/quarantine", json=_body(body))

    def release_agent(self, agent_id: str, body: AgentDecision) -> AgentPublic:
        """Release a quarantined agent (admins)."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/release", json=_body(body))

    def revoke_agent(self, agent_id: str, body: AgentDecision) -> AgentPublic:
        """Revoke an agent: its credential stops working (admins)."""
        return self._call(AgentPublic, "POST", f"agents/{_agent(agent_id)}/revoke", json=_body(body))

    def audit_events(self, *, action: str | None = None, target: str | None = None, limit: int | None = None) -> list[AuditEventPublic]:
        """Audit events, newest first, optionally only actions starting with ``action`` or about ``target``."""
        params = {k: v for k, v in {"action": action, "target": target, "limit": limit}.items() if v is not None}
        return self._call(list[AuditEventPublic], "GET", "audit", params=params)

    # --- webhooks (admins) -----------------------------------------------------------------

    def add_webhook(self, body: WebhookCreate) -> WebhookCreated:
        return self._call(_models("webhooks").WebhookCreated, "POST", "webhooks", json=_body(body))

    def webhooks(self) -> list[WebhookPublic]:
        return self._call(list[_models("webhooks").WebhookPublic], "GET", "webhooks")

    def remove_webhook(self, webhook_id: int) -> WebhookPublic:
        return self._call(_models("webhooks").WebhookPublic, "DELETE", f"webhooks/{_row_id(webhook_id, 'webhook id')}")

    def test_webhook(self, webhook_id: int) -> WebhookDeliveryPublic:
        return self._call(_models("webhooks").WebhookDeliveryPublic,
                          "POST", f"webhooks/{_row_id(webhook_id, 'webhook id')}/test")

    def webhook_deliveries(self, *, webhook_id: int | None = None, failed: bool = False,
                           limit: int | None = None) -> list[WebhookDeliveryPublic]:
        """Recent deliveries, newest first: of one endpoint, and only the failed ones, if asked."""
        params: dict[str, Any] = {"webhook": webhook_id, "limit": limit}
        params = {k: v for k, v in params.items() if v is not None}
        if failed:
            params["failed"] = "true"
        return self._call(list[_models("webhooks").WebhookDeliveryPublic], "GET", "webhooks/deliveries", params=params)

    # --- tickets (engineers) --------------------------------------------------------------

    def create_ticket(self, body: TicketCreate) -> TicketDetail:
        return self._call(TicketDetail, "POST", "tickets", json=_body(body))

    def tickets(self, *, status: Sequence[TicketStatus] = (), assignee: str | None = None,
                limit: int | None = None, closed: bool = False, overdue: bool = False,
                due_before: datetime | None = None, sort: TicketSort | None = None) -> list[TicketPublic]:
        """Tickets, newest first (or by due time with ``sort``); closed ones only with ``closed`` or a ``status`` naming them.

        ``assignee`` '' or 'none' means unassigned ones; ``overdue`` keeps those whose
        first response is late; ``due_before`` those unanswered and due before then.
        """
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if status:
            params["status"] = [TicketStatus(s).value for s in status]
        if assignee is not None:
            params["assignee"] = assignee
        if closed:
            params["closed"] = "true"
        if overdue:
            params["overdue"] = "true"
        if due_before is not None:
            params["due_before"] = due_before.isoformat()
        if sort is not None:
            params["sort"] = TicketSort(sort).value
        return self._call(list[TicketPublic], "GET", "tickets", params=params)

    def ticket(self, ticket: TicketRef) -> TicketDetail:
        return self._call(TicketDetail, "GET", f"tickets/{_ticket(ticket)}")

    def update_ticket(self, ticket: TicketRef, body: TicketUpdate) -> TicketDetail:
        return self._call(TicketDetail, "PATCH", f"tickets/{_ticket(ticket)}", json=_body(body))

    def add_note(self, ticket: TicketRef, body: NoteCreate) -> TicketDetail:
        return self._call(TicketDetail, "POST", f"tickets/{_ticket(ticket)}/notes", json=_body(body))

    def reopen_ticket(self, ticket: TicketRef) -> TicketDetail:
        """Bring a closed or resolved ticket back to open (audited)."""
        return self._call(TicketDetail, "POST", f"tickets/{_ticket(ticket)}/reopen")

    def create_pairing_code(self, ticket: TicketRef) -> PairingCodeCreated:
        return self._call(PairingCodeCreated, "POST", f"tickets/{_ticket(ticket)}/pairing-codes")

    # --- bundles (engineers) ----------------------------------------------------------------

    def ticket_bundles(self, ticket: TicketRef) -> list[BundlePublic]:
        """A ticket's diagnostics bundles, oldest first."""
        return self._call(list[BundlePublic], "GET", f"tickets/{_ticket(ticket)}/bundles")

    def bundle(self, bundle_id: str) -> BundleDetail:
        return self._call(BundleDetail, "GET", f"bundles/{_segment(bundle_id, 'bundle id')}")

    def download_bundle(self, bundle_id: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> tuple[int, str]:
        """Stream a bundle's archive to ``dest``; return (size, sha256), checked against the server's digest."""
        return self.connection.download(f"bundles/{_segment(bundle_id, 'bundle id')}/archive", dest, progress)

    def download_attachment(self, ticket: TicketRef, attachment_id: str, dest: Path) -> tuple[int, str]:
        """Stream a file a user attached to ``dest``; return (size, sha256), checked against the server's digest."""
        segment = _segment(attachment_id, "attachment id", hints={Audience.ENGINEER: "See the ids with `helpline ticket show`."})
        return self.connection.download(f"tickets/{_ticket(ticket)}/attachments/{segment}", dest)

    # --- the PC itself --------------------------------------------------------------------

    def enroll(self, body: EnrollRequest) -> AgentCredential:
        return self._call(AgentCredential, "POST", "agents/enroll", json=_body(body))

    def pair(self, body: PairRequest) -> PairResponse:
        return self._call(PairResponse, "POST", "pair", json=_body(body))

    def request_help(self, body: SelfServiceRequest) -> SelfServiceResponse:
        """Open a ticket from this PC (self-service)."""
        return self._call(SelfServiceResponse, "POST", "self-service/tickets", json=_body(body))

    def my_tickets(self) -> list[AgentTicket]:
        """The tickets this PC is linked to, newest first."""
        return self._call(list[AgentTicket], "GET", "agent/tickets")

    def my_ticket(self, ticket: TicketRef) -> AgentTicket:
        return self._call(AgentTicket, "GET", f"agent/tickets/{_ticket(ticket)}")

    def hand_over(self, body: HandOverRequest) -> HandOverResponse:
        """Take over the tickets of this PC's per-user identity, which signed ``body`` (the PC's service agent)."""
        return self._call(_models("hand_over").HandOverResponse, "POST", "agent/hand-over", json=_body(body))

    def reply(self, ticket: TicketRef, body: ReplyCreate) -> AgentTicket:
        """Add the user's reply (and perhaps one small file) to a ticket this PC is linked to."""
        return self._call(AgentTicket, "POST", f"agent/tickets/{_ticket(ticket)}/replies", json=_body(body))

    def start_upload(self, ticket: TicketRef, body: UploadCreate) -> UploadStatus:
        """Start (or resume, for the same file) uploading a bundle to a ticket this PC is linked to."""
        return self._call(UploadStatus, "POST", f"agent/tickets/{_ticket(ticket)}/uploads", json=_body(body))

    def upload_status(self, upload_id: str) -> UploadStatus:
        return self._call(UploadStatus, "GET", f"uploads/{_segment(upload_id, 'upload id')}")

    def put_chunk(self, upload_id: str, index: int, data: bytes, sha256: str) -> UploadStatus:
        """Send chunk ``index`` of an upload as raw bytes with its SHA-256."""
        path = f"uploads/{_segment(upload_id, 'upload id')}/chunks/{_row_id(index, 'chunk index')}"
        return self._call(UploadStatus, "PUT", path, content=data,
                          headers={"X-Chunk-SHA256": sha256, "Content-Type": "application/octet-stream"})

    def complete_upload(self, upload_id: str) -> BundlePublic:
        """Ask the server to join and verify the chunks; idempotent, so a lost answer can be asked for again."""
        return self._call(BundlePublic, "POST", f"uploads/{_segment(upload_id, 'upload id')}/complete")

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot_credential(self, body: CredentialRequest) -> RepositoryCredential:
        """A short-lived credential for a server-side restic repository (this PC's own, or a replacement restore's)."""
        return self._call(_models("snapshots").RepositoryCredential, "POST", "agent/snapshots/credential", json=_body(body))

    def report_snapshot(self, body: SnapshotReport) -> StatusMessage:
        """Report a snapshot run of this PC (successful or not); the answer's status is the PC's protection state."""
        return self._call(StatusMessage, "POST", "agent/snapshots/reports", json=_body(body))

    def report_verification(self, body: VerifyReport) -> StatusMessage:
        """Report a sample restore this PC checked by hash; the answer's status is the PC's protection state."""
        return self._call(StatusMessage, "POST", "agent/snapshots/verifications", json=_body(body))

    def put_escrow(self, body: EscrowPut) -> StatusMessage:
        """Escrow this PC's server-repository password (ForbiddenError when the server keeps none: escrow off)."""
        return self._call(StatusMessage, "PUT", "agent/snapshots/escrow", json=_body(body))

    def get_escrow(self, request_id: str) -> EscrowPut:
        """The old PC's repository password, for the replacement restore ``request_id`` that names this PC."""
        return self._call(_models("snapshots").EscrowPut, "GET", "agent/snapshots/escrow", params={"request_id": request_id})

    def agent_snapshots(self, agent_id: str, limit: int | None = None) -> list[SnapshotReport]:
        """A PC's reported snapshot runs, newest first (engineers)."""
        params = {"limit": limit} if limit is not None else None
        return self._call(list[_models("snapshots").SnapshotReport],
                          "GET", f"agents/{_agent(agent_id)}/snapshots", params=params)

    def agent_protection(self, agent_id: str) -> ProtectionStatus:
        """Whether a PC is protected by snapshots, in plain words (engineers)."""
        return self._call(_models("snapshots").ProtectionStatus, "GET", f"agents/{_agent(agent_id)}/protection")

    # --- engineer -> PC requests ------------------------------------------------------------

    def create_pc_request(self, agent_id: str, body: PcRequestCreate) -> PcRequestPublic:
        """Ask a PC to do something (snapshot, restore, diagnostics, browse, diff); the server signs it for the PC."""
        return self._call(_models("pc_requests").PcRequestPublic,
                          "POST", f"agents/{_agent(agent_id)}/requests", json=_body(body))

    def pc_requests(self, agent_id: str, *, active: bool = False, limit: int | None = None) -> list[PcRequestPublic]:
        """A PC's requests, newest first; only those still under way with ``active``."""
        params = {k: v for k, v in {"active": "true" if active else None, "limit": limit}.items() if v is not None}
        return self._call(list[_models("pc_requests").PcRequestPublic],
                          "GET", f"agents/{_agent(agent_id)}/requests", params=params or None)

    def pc_request(self, agent_id: str, request_id: str, wait: int | None = None, seen: int | None = None) -> PcRequestPublic:
        """One request; with ``wait``, the server holds the answer up to that many seconds until its version
        passes ``seen`` (or it is final)."""
        segment = _segment(request_id, "request id")
        extra = _wait(wait)
        if seen is not None:
            extra.setdefault("params", {})["seen"] = _row_id(seen, "version")
        return self._call(_models("pc_requests").PcRequestPublic,
                          "GET", f"agents/{_agent(agent_id)}/requests/{segment}", **extra)

    def next_pc_requests(self, wait: int | None = None) -> list[SignedPcRequest]:
        """This PC's requests the server has for it (signed by the server key), waiting up to ``wait`` seconds for one."""
        return self._call(list[_models("pc_requests").SignedPcRequest], "GET", "agent/requests", **_wait(wait))

    def update_pc_request(self, request_id: str, body: PcRequestUpdate) -> PcRequestPublic:
        """Report where one of this PC's requests stands (running, progress, done, failed, refused)."""
        return self._call(_models("pc_requests").PcRequestPublic,
                          "POST", f"agent/requests/{_segment(request_id, 'request id')}/update",
                          json=_body(body))

    # --- per-group policies ----------------------------------------------------------------------

    def set_policy(self, group: str, body: PolicyBody) -> PolicyPublic:
        """Set a group's policy (admins); the server stores it as the group's next version."""
        return self._newer_server(POLICIES_SINCE, "group policies", lambda: self._call(
            PolicyPublic, "PUT", f"policies/{_segment(group, 'group name')}", json=_body(body)))

    def policies(self) -> list[PolicyPublic]:
        """The current policy of every group that has one."""
        return self._newer_server(POLICIES_SINCE, "group policies",
                                  lambda: self._call(list[PolicyPublic], "GET", "policies"))

    def policy(self, group: str, version: int | None = None) -> PolicyPublic:
        """A group's current policy, or its ``version``."""
        params = {"version": _row_id(version, "policy version")} if version is not None else None
        return self._newer_server(POLICIES_SINCE, "group policies", lambda: self._call(
            PolicyPublic, "GET", f"policies/{_segment(group, 'group name')}", params=params))

    def agent_policy(self, body: PolicyCheckIn) -> PolicyCheckInAnswer:
        """This PC's check-in: say the policy version it runs, get its group's current one (signed) if it differs."""
        return self._newer_server(POLICIES_SINCE, "group policies",
                                  lambda: self._call(PolicyCheckInAnswer, "POST", "agent/policy", json=_body(body)))

    def _newer_server(self, since: int, what: str, call: Callable[[], Any]) -> Any:
        """``call()``; a route missing on a server older than protocol ``since`` says the server is too old."""
        try:
            return call()
        except NotFoundError as exc:
            spoken = getattr(self.connection, "server_protocol", None) or 1
            if spoken < since:
                raise ServerTooOldError(
                    f"The server at {self.base_url} is too old for {what}: upgrade it (it speaks protocol "
                    f"{spoken}, {what} need {since} or newer).",
                    hints={Audience.USER: "Tell your administrator.",
                           Audience.ENGINEER: "Ask your administrator to upgrade the Helpline server."}) from exc
            raise

    # --- remote sessions: the PC's side (signed agent requests) -------------------------------

    def offer_session(self, body: SessionOffer) -> SessionPublic:
        """Offer a session on a ticket this PC is linked to (replaces this PC's older waiting offer on it)."""
        return self._call(_models("sessions").SessionPublic, "POST", "agent/sessions", json=_body(body))

    def session_events(self, session_id: str, after: int = 0, wait: float = 0) -> list[SessionEvent]:
        """Events for this PC's session after sequence number ``after``, waiting up to ``wait`` seconds for one."""
        extra = _wait(min(wait, _models("sessions").MAX_WAIT_SECONDS))
        extra["params"]["after"] = _after(after)
        return self._call(list[_models("sessions").SessionEvent],
                          "GET", f"agent/sessions/{_session(session_id)}/events", **extra)

    def answer_session(self, session_id: str, body: ConsentAnswer) -> RelayTicket | None:
        """Tell the server the user's answer to a grant: the PC's relay ticket if approved, None if refused."""
        answer = self._call(_models("sessions").RelayTicket | StatusMessage,
                            "POST", f"agent/sessions/{_session(session_id)}/answer",
                            json=_body(body))
        return answer if isinstance(answer, _models("sessions").RelayTicket) else None

    def session_relay_ticket(self, session_id: str) -> RelayTicket:
        """A fresh PC-side relay ticket for the approved session (to reconnect)."""
        return self._call(_models("sessions").RelayTicket, "POST", f"agent/sessions/{_session(session_id)}/relay")

    def send_session_chat(self, session_id: str, body: ChatMessage) -> ChatEntry:
        """The user's chat message to the engineer."""
        return self._call(_models("sessions").ChatEntry,
                          "POST", f"agent/sessions/{_session(session_id)}/chat", json=_body(body))

    def change_session_scopes(self, session_id: str, body: ScopeChange) -> SessionPublic:
        """Record the scopes that remain after the user took some back."""
        return self._call(_models("sessions").SessionPublic,
                          "POST", f"agent/sessions/{_session(session_id)}/scopes", json=_body(body))

    def end_session(self, session_id: str, body: SessionEnd) -> SessionPublic:
        """End this PC's session (or withdraw its offer), with the bytes it counted."""
        return self._call(_models("sessions").SessionPublic,
                          "POST", f"agent/sessions/{_session(session_id)}/end", json=_body(body))

    def upload_recording(self, session_id: str, data: bytes) -> SessionPublic:
        """Attach the session's asciicast v2 recording to its ticket."""
        return self._call(_models("sessions").SessionPublic,
                          "PUT", f"agent/sessions/{_session(session_id)}/recording", content=data,
                          headers={"Content-Type": "application/x-asciicast"}, timeout=300.0)

    # --- remote sessions: the engineer's side ---------------------------------------------------

    def sessions(self, ticket: TicketRef | None = None, state: SessionState | None = None) -> list[SessionPublic]:
        """Sessions, newest first, optionally of one ticket and in one state."""
        params: dict[str, Any] = {}
        if ticket is not None:
            params["ticket"] = canonical_ticket(ticket)
        if state is not None:
            params["state"] = _models("sessions").SessionState(state).value
        return self._call(list[_models("sessions").SessionPublic], "GET", "sessions", params=params or None)

    def session(self, session_id: str) -> SessionPublic:
        return self._call(_models("sessions").SessionPublic, "GET", f"sessions/{_session(session_id)}")

    def request_grant(self, session_id: str, body: GrantRequest) -> GrantIssued:
        """Ask to connect: the server signs a grant for your key and asks the user."""
        return self._call(_models("sessions").GrantIssued,
                          "POST", f"sessions/{_session(session_id)}/grants", json=_body(body))

    def grant_status(self, session_id: str, grant_id: str, wait: float = 0) -> SessionPublic:
        """The session once the user answered grant ``grant_id``, or as it is after ``wait`` seconds."""
        return self._call(_models("sessions").SessionPublic, "GET",
                          f"sessions/{_session(session_id)}/grants/{_segment(grant_id, 'grant id')}",
                          **_wait(min(wait, _models("sessions").MAX_WAIT_SECONDS)))

    def engineer_relay_ticket(self, session_id: str) -> RelayTicket:
        """Your relay ticket for an approved session whose grant names you."""
        return self._call(_models("sessions").RelayTicket, "POST", f"sessions/{_session(session_id)}/relay")

    def session_chat(self, session_id: str, after: int = 0, wait: float = 0) -> list[ChatEntry]:
        """The session's chat after sequence number ``after``, waiting up to ``wait`` seconds for more."""
        extra = _wait(min(wait, _models("sessions").MAX_WAIT_SECONDS))
        extra["params"]["after"] = _after(after)
        return self._call(list[_models("sessions").ChatEntry], "GET", f"sessions/{_session(session_id)}/chat", **extra)

    def post_session_chat(self, session_id: str, body: ChatMessage) -> ChatEntry:
        return self._call(_models("sessions").ChatEntry, "POST", f"sessions/{_session(session_id)}/chat", json=_body(body))

    def engineer_end_session(self, session_id: str, body: SessionEnd) -> SessionPublic:
        return self._call(_models("sessions").SessionPublic,
                          "POST", f"sessions/{_session(session_id)}/end", json=_body(body))

    def download_recording(self, session_id: str, dest: Path) -> tuple[int, str]:
        """Stream a session's asciicast recording to ``dest``; return (size, sha256)."""
        return self.connection.download(f"sessions/{_session(session_id)}/recording", dest)
