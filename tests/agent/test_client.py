"""The typed API client: each method is one server route, path values cannot escape
their segment, and answers are checked against their models (no network: a mock transport)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from starlette.routing import Match

from agent.client import HelplineClient
from protocol.webhooks import WebhookCreate
from protocol.hand_over import HandOverRequest
from protocol.pc_requests import PcRequestCreate, PcRequestUpdate
from protocol.policy import PolicyBody, PolicyCheckIn
from protocol.snapshots import CredentialRequest, EscrowPut, SnapshotReport, VerifyReport
from protocol.errors import ConfigError, DamagedError, InvalidInputError, NotFoundError, UnavailableError
from protocol.snapshots import CredentialRequest, EscrowPut, SnapshotReport, VerifyReport
from protocol.grants import Scope
from protocol.sessions import ChatMessage, ConsentAnswer, GrantRequest, ScopeChange, SessionEnd, SessionOffer
from protocol.schemas import (
    AccountCreate,
    AccountUpdate,
    AgentDecision,
    AgentReplace,
    AgentRetire,
    AgentIdentity,
    EnrollmentTokenCreate,
    EnrollRequest,
    LoginRequest,
    NoteCreate,
    PairRequest,
    PasswordChange,
    ReplyCreate,
    SelfServiceRequest,
    SshKeyCreate,
    TicketCreate,
    TicketStatus,
    TicketUpdate,
    UploadCreate,
    parse_input,
)

BASE = "http://127.0.0.1:8700"
SNAPSHOT_REPORT = SnapshotReport(repository="server", status="ok", snapshot_id="0" * 64,
                                 started_at="2026-12-01T10:00:00Z", finished_at="2026-12-01T10:05:00Z")
VERIFY_REPORT = VerifyReport(repository="server", snapshot_id="0" * 64, at="2026-12-01T11:00:00Z", files_checked=3,
                             bytes_checked=10, ok=True)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG06IhQU+4hiaNXQIMZH+R8cYrDBWMOmnQpsB0OF30N2 host"
BUNDLE = "0f8fad5b-d9cb-469f-a165-70867728950e"
IDENTITY = AgentIdentity(public_key="A" * 44, hostname="pc-1")

TICKET = {
    "number": "T-1042", "title": "VPN", "description": "", "requester": "", "priority": "normal", "status": "new",
    "assignee": None, "channel": "engineer", "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z",
    "first_response_due": "2026-12-01T14:00:00Z", "first_responded_at": None,
}
DETAIL = {**TICKET, "agents": [], "timeline": [], "bundles": []}


class Recorder:
    """A transport that keeps every request and answers from a table (404 for anything else)."""

    def __init__(self, answers: dict[tuple[str, str], httpx.Response] | None = None):
        self.requests: list[httpx.Request] = []
        self.answers = answers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.path))
        if answer is not None:
            return answer
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "nothing here", "hint": None}})


def client_with(recorder: Recorder) -> HelplineClient:
    return HelplineClient.connect(BASE, "hlu_token", transport=httpx.MockTransport(recorder))


def every_call(tmp_path: Path):
    """One call of every client method, with arguments the server would accept."""
    return [
        ("server_info", ()),
        ("login", (LoginRequest(username="alice", password="pw"),)),
        ("logout", ()),
        ("me", ()),
        ("change_password", (PasswordChange(current_password="old", new_password="a new pass phrase"),)),
        ("my_tokens", ()),
        ("account_tokens", ("alice",)),
        ("revoke_token", (12,)),
        ("ssh_keys", ()),
        ("add_ssh_key", (SshKeyCreate(public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA alice"),)),
        ("remove_ssh_key", (3,)),
        ("accounts", ()),
        ("create_account", (AccountCreate(username="alice", password="correct horse battery"),)),
        ("update_account", ("alice", AccountUpdate(disabled=True))),
        ("create_enrollment_token", (EnrollmentTokenCreate(),)),
        ("enrollment_tokens", ()),
        ("revoke_enrollment_token", (4,)),
        ("agents", ()),
        ("agent", ("0f8fad5b",)),
        ("approve_agent", ("0f8fad5b", AgentDecision(reason="re-imaged"))),
        ("refuse_agent", ("0f8fad5b", AgentDecision())),
        ("revoke_agent", ("0f8fad5b", AgentDecision(reason="stolen"))),
        ("replace_agent", ("0f8fad5b", AgentReplace(replaces="5d0c7a3e", reason="re-imaged"))),
        ("retire_agent", ("0f8fad5b", AgentRetire(reason="sold"))),
        ("quarantine_agent", ("0f8fad5b", AgentDecision(reason="cloned"))),
        ("release_agent", ("0f8fad5b", AgentDecision(reason="fixed"))),
        ("audit_events", ()),
        ("add_webhook", (WebhookCreate(url="https://helpdesk.example.org/hook", events=["ticket.opened"]),)),
        ("webhooks", ()),
        ("remove_webhook", (7,)),
        ("test_webhook", (7,)),
        ("webhook_deliveries", ()),
        ("create_ticket", (TicketCreate(title="VPN"),)),
        ("tickets", ()),
        ("ticket", ("#1042",)),
        ("update_ticket", ("t-1042", TicketUpdate(status=TicketStatus.OPEN))),
        ("add_note", (1042, NoteCreate(message="hello"))),
        ("create_pairing_code", ("T-1042",)),
        ("reopen_ticket", ("T-1042",)),
        ("ticket_bundles", ("1042",)),
        ("bundle", (BUNDLE,)),
        ("download_bundle", (BUNDLE, tmp_path / "b.tar.gz")),
        ("download_attachment", ("T-1042", BUNDLE, tmp_path / "a.bin")),
        ("enroll", (EnrollRequest(token="hle_x", identity=IDENTITY, signature="sig"),)),
        ("pair", (PairRequest(code="7KQ2-M9XD", identity=IDENTITY, signature="sig"),)),
        ("request_help", (SelfServiceRequest(title="VPN"),)),
        ("my_tickets", ()),
        ("my_ticket", (" T-1042 ",)),
        ("reply", ("T-1042", ReplyCreate(message="It happened again"))),
        ("hand_over", (HandOverRequest(from_agent_id="a1", tickets=["T-1042"], signed_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                                       signature="c2ln"),)),
        ("start_upload", ("T-1042", UploadCreate(filename="bundle.tar.gz", size=1, sha256="0" * 64))),
        ("upload_status", (BUNDLE,)),
        ("put_chunk", (BUNDLE, 0, b"x", "0" * 64)),
        ("complete_upload", (BUNDLE,)),
        ("snapshot_credential", (CredentialRequest(purpose="backup"),)),
        ("report_snapshot", (SNAPSHOT_REPORT,)),
        ("report_verification", (VERIFY_REPORT,)),
        ("put_escrow", (EscrowPut(password="correct horse"),)),
        ("get_escrow", ("r-1",)),
        ("agent_snapshots", ("0f8fad5b",)),
        ("agent_protection", ("0f8fad5b",)),
        ("create_pc_request", ("0f8fad5b", PcRequestCreate(kind="snapshot"))),
        ("pc_requests", ("0f8fad5b",)),
        ("pc_request", ("0f8fad5b", BUNDLE, 25, 3)),
        ("next_pc_requests", (25,)),
        ("update_pc_request", (BUNDLE, PcRequestUpdate(state="running", progress=0.5))),
        ("set_policy", ("laptops", PolicyBody(unattended=["restore"]))),
        ("policies", ()),
        ("policy", ("laptops", 2)),
        ("agent_policy", (PolicyCheckIn(running=1),)),
        ("offer_session", (SessionOffer(ticket="T-1042", host_key=HOST_KEY),)),
        ("session_events", (BUNDLE, 3, 20)),
        ("answer_session", (BUNDLE, ConsentAnswer(grant_id=BUNDLE, approved=True))),
        ("session_relay_ticket", (BUNDLE,)),
        ("send_session_chat", (BUNDLE, ChatMessage(text="hello"))),
        ("change_session_scopes", (BUNDLE, ScopeChange(scopes=[Scope.VIEW]))),
        ("end_session", (BUNDLE, SessionEnd(reason="done"))),
        ("upload_recording", (BUNDLE, b'{"version": 2}\n')),
        ("sessions", ()),
        ("session", (BUNDLE,)),
        ("request_grant", (BUNDLE, GrantRequest(key_fingerprint="SHA256:" + "A" * 43))),
        ("grant_status", (BUNDLE, BUNDLE, 5)),
        ("engineer_relay_ticket", (BUNDLE,)),
        ("session_chat", (BUNDLE,)),
        ("post_session_chat", (BUNDLE, ChatMessage(text="hi"))),
        ("engineer_end_session", (BUNDLE, SessionEnd())),
        ("download_recording", (BUNDLE, tmp_path / "r.cast")),
        ("key_handovers", ()),
        ("rotate_server_key", ()),
    ]


def server_routes():
    return [r for m in api_modules() for r in m.router.routes if r.path.startswith("/v1/")]


def api_modules():
    """Every module of server.api that has a router: a new module's routes are checked without listing it here."""
    import importlib
    import pkgutil

    import server.api

    modules = [importlib.import_module(f"server.api.{info.name}") for info in pkgutil.iter_modules(server.api.__path__)]
    return [m for m in modules if hasattr(m, "router")]


def test_every_method_is_one_server_route_and_every_route_has_a_method(tmp_path):
    recorder = Recorder()
    calls = every_call(tmp_path)
    with client_with(recorder) as client:
        for name, args in calls:
            with pytest.raises(NotFoundError):
                getattr(client, name)(*args)
    assert len(recorder.requests) == len(calls)
    routes = server_routes()
    used = set()
    for request in recorder.requests:
        scope = {"type": "http", "method": request.method, "path": request.url.path}
        matches = [r for r in routes if r.matches(scope)[0] == Match.FULL]
        assert len(matches) == 1, f"{request.method} {request.url.path} is not exactly one server route"
        used.add((request.method, matches[0].path))
    assert used == {(m, r.path) for r in routes for m in r.methods}


@pytest.mark.parametrize("reference", ["#1042", "t-1042", "1042", " T-1042\n", 1042])
def test_ticket_references_are_sent_as_their_label(reference):
    recorder = Recorder({("GET", "/v1/tickets/T-1042"): httpx.Response(200, json=DETAIL)})
    with client_with(recorder) as client:
        assert client.ticket(reference).number == "T-1042"
    assert recorder.requests[0].url.raw_path == b"/v1/tickets/T-1042"


@pytest.mark.parametrize("reference", ["T-1001?x=1", "t1001x", "../1001", "T-", "1001/notes", "T-1001#x", "%2e%2e", -1, None])
def test_a_ticket_reference_cannot_reach_another_url(reference):
    recorder = Recorder()
    with client_with(recorder) as client:
        for call in (lambda: client.ticket(reference), lambda: client.my_ticket(reference),
                     lambda: client.ticket_bundles(reference), lambda: client.create_pairing_code(reference),
                     lambda: client.add_note(reference, NoteCreate(message="x"))):
            with pytest.raises(InvalidInputError):
                call()
    assert recorder.requests == []


@pytest.mark.parametrize("value", ["..", ".", "", "a/b", "a\\b", "a?b=1", "a#b", "a%2Fb", "a\nb", "x" * 201])
def test_other_path_values_cannot_escape_their_segment(value):
    recorder = Recorder()
    with client_with(recorder) as client:
        for call in (lambda: client.agent(value), lambda: client.update_account(value, AccountUpdate(disabled=True)),
                     lambda: client.bundle(value), lambda: client.complete_upload(value)):
            with pytest.raises(InvalidInputError):
                call()
        for number in (-1, True, "3"):
            with pytest.raises(InvalidInputError):
                client.remove_ssh_key(number)
    assert recorder.requests == []


def test_unusual_but_harmless_values_are_encoded():
    recorder = Recorder()
    with client_with(recorder) as client, pytest.raises(NotFoundError):
        client.agent("pc one+two")
    assert recorder.requests[0].url.raw_path == b"/v1/agents/pc%20one%2Btwo"


def test_bodies_and_queries_on_the_wire():
    recorder = Recorder({
        ("PATCH", "/v1/tickets/T-7"): httpx.Response(200, json={**DETAIL, "number": "T-7"}),
        ("GET", "/v1/tickets"): httpx.Response(200, json=[TICKET]),
        ("GET", "/v1/audit"): httpx.Response(200, json=[]),
    })
    with client_with(recorder) as client:
        client.update_ticket("T-7", TicketUpdate(assignee=""))  # an empty assignee unassigns: it must be sent
        listed = client.tickets(status=[TicketStatus.NEW, TicketStatus.OPEN], assignee="none", limit=5)
        assert [t.number for t in listed] == ["T-1042"]
        assert client.audit_events(action="auth.", limit=50) == []
    patch, listing, audit = recorder.requests
    assert json.loads(patch.content) == {"assignee": ""}
    assert listing.url.params.get_list("status") == ["new", "open"]
    assert listing.url.params["assignee"] == "none" and listing.url.params["limit"] == "5"
    assert dict(audit.url.params) == {"action": "auth.", "limit": "50"}
    assert patch.headers["Authorization"] == "Bearer hlu_token"


def test_a_chunk_is_sent_as_raw_bytes_with_its_digest():
    status = {"id": BUNDLE, "ticket": "T-1", "filename": "bundle.tar.gz", "size": 3, "sha256": "0" * 64, "chunk_size": 3,
              "chunks": 1, "received": [0], "expires_at": "2026-12-02T10:00:00Z", "complete": False, "bundle_id": None}
    recorder = Recorder({("PUT", f"/v1/uploads/{BUNDLE}/chunks/0"): httpx.Response(200, json=status)})
    digest = hashlib.sha256(b"abc").hexdigest()
    with client_with(recorder) as client:
        assert client.put_chunk(BUNDLE, 0, b"abc", digest).received == [0]
    sent = recorder.requests[0]
    assert sent.content == b"abc" and sent.headers["X-Chunk-SHA256"] == digest
    assert sent.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("answer", [{}, [], {"number": "T-1"}, {**DETAIL, "status": "exploded"}])
def test_an_answer_that_is_not_the_model_is_refused(answer):
    recorder = Recorder({("GET", "/v1/tickets/T-1042"): httpx.Response(200, json=answer)})
    with client_with(recorder) as client, pytest.raises(UnavailableError) as err:
        client.ticket("T-1042")
    assert "does not understand" in err.value.message


def test_download_checks_the_digest(tmp_path):
    data = b"bundle bytes"
    good = {"X-Content-SHA256": hashlib.sha256(data).hexdigest()}
    recorder = Recorder({("GET", f"/v1/bundles/{BUNDLE}/archive"): httpx.Response(200, content=data, headers=good)})
    with client_with(recorder) as client:
        assert client.download_bundle(BUNDLE, tmp_path / "a") == (len(data), good["X-Content-SHA256"])
    assert (tmp_path / "a").read_bytes() == data
    recorder = Recorder({("GET", f"/v1/bundles/{BUNDLE}/archive"): httpx.Response(200, content=data, headers={"X-Content-SHA256": "0" * 64})})
    with client_with(recorder) as client, pytest.raises(DamagedError):
        client.download_bundle(BUNDLE, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_plain_http_only_on_loopback():
    with pytest.raises(ConfigError):
        HelplineClient.connect("http://help.example.com", "token")


def test_typed_input_is_refused_as_the_server_words_it():
    with pytest.raises(InvalidInputError) as err:
        parse_input(AccountCreate, username="alice", password="short")
    assert err.value.message == "A password needs at least 12 characters (spaces at either end do not count)."
    with pytest.raises(InvalidInputError) as err:
        parse_input(TicketCreate, title="  ", priority="sky-high")
    assert err.value.message.startswith("The title is empty") and err.value.message.endswith("(and 1 more problem).")


def test_long_polls_wait_on_the_server_and_give_the_http_call_more_time():
    recorder = Recorder({("GET", f"/v1/agent/sessions/{BUNDLE}/events"): httpx.Response(200, json=[])})
    with client_with(recorder) as client:
        assert client.session_events(BUNDLE, after=4, wait=300) == []
        with pytest.raises(InvalidInputError):
            client.session_events(BUNDLE, after=-1, wait=1)
    request, = recorder.requests
    assert dict(request.url.params) == {"wait": "25", "after": "4"}
    assert request.extensions["timeout"]["read"] > 25


def test_a_refused_answer_is_none_and_an_approved_one_a_relay_ticket():
    path = f"/v1/agent/sessions/{BUNDLE}/answer"
    ticket = {"url": "ws://127.0.0.1:8700/v1/relay", "token": "hlr_x", "expires_at": "2026-12-01T10:00:00Z", "side": "pc"}
    with client_with(Recorder({("POST", path): httpx.Response(200, json={"status": "refused"})})) as client:
        assert client.answer_session(BUNDLE, ConsentAnswer(grant_id=BUNDLE, approved=False)) is None
    with client_with(Recorder({("POST", path): httpx.Response(200, json=ticket)})) as client:
        assert client.answer_session(BUNDLE, ConsentAnswer(grant_id=BUNDLE, approved=True)).token == "hlr_x"


def test_every_request_states_the_protocol_version_and_a_route_missing_on_an_older_server_says_upgrade_it():
    from agent.client import ServerTooOldError
    from protocol.policy import PolicyCheckIn
    from protocol.version import PROTOCOL_HEADER, PROTOCOL_VERSION

    recorder = Recorder()  # an older server: 404 for the route, and no version header
    with client_with(recorder) as client:
        with pytest.raises(ServerTooOldError, match="too old for group policies: upgrade it"):
            client.agent_policy(PolicyCheckIn(running=1))
        with pytest.raises(ServerTooOldError):
            client.policies()
    assert recorder.requests[0].headers[PROTOCOL_HEADER] == str(PROTOCOL_VERSION)

    # A server that speaks the version: its 404 is a plain "not found" (no such group), never "upgrade it".
    current = Recorder({("GET", "/v1/policies/lab"): httpx.Response(
        404, json={"error": {"code": "not_found", "message": "Group lab has no policy."}},
        headers={PROTOCOL_HEADER: str(PROTOCOL_VERSION)})})
    with client_with(current) as client:
        with pytest.raises(NotFoundError) as raised:
            client.policy("lab")
    assert not isinstance(raised.value, ServerTooOldError)
