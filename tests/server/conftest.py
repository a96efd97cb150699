"""Fixtures for server tests: the S3 endpoint, and the server in-process.

``helpline`` is the server's ASGI app on a fresh database of the test's backend
(SQLite, and PostgreSQL when HELPLINE_TEST_DATABASES names it), driven through
an HTTP client in the same process, with a clock the test sets: expiry is
tested by moving ``clock``, never by sleeping. The :class:`Helpline` it returns
makes the principals a test needs (an admin's or engineer's token, an enrolled
PC's credential) and reads the database behind the app.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import agent_requests, signing
from protocol.schemas import AccountCreate, AgentIdentity, Role
from server.accounts import create_account
from server.app import create_app
from server.audit import Actor
from server.db import transaction
from server.migrate import upgrade
from server.models import AuditEvent, RateLimitWindow
from server.runtime import ServerRuntime, build_runtime
from server.settings import ServerSettings
from tests.support.s3 import moto_server, s3_bucket  # noqa: F401 - fixtures for pytest

PASSWORD = "a-password-for-tests"
CLIENT_IP = "192.0.2.10"


class Clock:
    """A clock that stands still until a test moves it; the runtime tells time by it."""

    def __init__(self, now: datetime = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move the clock forward by ``timedelta(**delta)``; return the new time."""
        self.now += timedelta(**delta)
        return self.now


@dataclass
class PCKey:
    """A PC's identity key, signing requests the way the agent does."""

    hostname: str
    key: Ed25519PrivateKey = field(default_factory=signing.generate_key)
    machine_id: str = ""  # the hashed machine id the PC reports (evidence the server compares)

    @property
    def identity(self) -> dict[str, Any]:
        return AgentIdentity(public_key=signing.public_key_b64(self.key), hostname=self.hostname, os="Test OS",
                             agent_version="test", machine_id=self.machine_id).model_dump()

    def signed(self, purpose: str, secret_field: str, secret: str) -> dict[str, Any]:
        """The identity and its signature of ``{purpose, secret_field: secret, identity}``."""
        payload = signing.proof_payload(purpose, secret_field, secret, self.identity)
        return {"identity": self.identity, "signature": signing.sign(self.key, payload)}


@dataclass
class EnrolledPC:
    """An enrolled PC; passed to :meth:`Helpline.call` in place of a token, it signs the request as the agent does."""

    key: PCKey
    agent_id: str
    credential: str


@dataclass
class Helpline:
    """The in-process server: its runtime, an HTTP client for its app, and its clock."""

    runtime: ServerRuntime
    http: TestClient
    clock: Clock

    @property
    def settings(self) -> ServerSettings:
        return self.runtime.settings

    def call(self, method: str, path: str, token: str | EnrolledPC | None = None, **kwargs: Any) -> httpx.Response:
        """Send a request to ``/v1/<path>`` with ``token`` as its bearer token, or signed by an enrolled PC."""
        if isinstance(token, EnrolledPC):
            return self.http.send(self.signed(token, method, path, **kwargs))
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, f"/v1/{path.lstrip('/')}", headers=headers, **kwargs)

    def signed(self, pc: EnrolledPC, method: str, path: str, *, at: datetime | None = None,
               nonce: str | None = None, **kwargs: Any) -> httpx.Request:
        """The request ``pc``'s agent would send: signed with its key, dated ``at`` (the clock's time by default)."""
        request = self.http.build_request(method, f"/v1/{path.lstrip('/')}", **kwargs)
        request.headers.update(agent_requests.sign_request(
            pc.key.key, agent_id=pc.agent_id, method=method, target=request.url.raw_path.decode(),
            content_sha256=agent_requests.body_digest(request.read()), now=at or self.clock(), nonce=nonce))
        return request

    def answer_is_signed(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Whether ``response`` carries the server's signature over its answer to ``request``."""
        payload = agent_requests.response_payload(
            nonce=request.headers[agent_requests.NONCE_HEADER], request_signature=request.headers[agent_requests.SIGNATURE_HEADER],
            method=request.method, target=request.url.raw_path.decode(), content_sha256=request.headers[agent_requests.CONTENT_HEADER],
            status=response.status_code, body_sha256=agent_requests.body_digest(response.content))
        return agent_requests.verify(self.runtime.public_key, payload,
                                     response.headers.get(agent_requests.RESPONSE_SIGNATURE_HEADER, ""))

    def ok(self, method: str, path: str, token: str | EnrolledPC | None = None, **kwargs: Any) -> Any:
        """Like :meth:`call`, failing the test unless the answer is a 2xx; return its JSON."""
        response = self.call(method, path, token, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def db(self) -> Session:
        """A session on the app's database (a context manager that commits)."""
        return transaction(self.runtime.sessions)

    def account(self, role: Role = Role.ENGINEER, username: str | None = None) -> str:
        """Create an account with :data:`PASSWORD`; return its username."""
        username = username or f"{role.value}-{secrets.token_hex(3)}"
        with self.db() as session:
            create_account(session, Actor.system("tests"), AccountCreate(username=username, password=PASSWORD, role=role))
        return username

    def token(self, role: Role = Role.ENGINEER, username: str | None = None) -> str:
        """An API token for a new account with ``role``, got by logging in."""
        username = self.account(role, username)
        return self.ok("POST", "auth/login", json={"username": username, "password": PASSWORD})["token"]

    def admin(self) -> str:
        return self.token(Role.ADMIN)

    def enrolled_pc(self, hostname: str = "pc-1", group: str = "office") -> EnrolledPC:
        """A PC enrolled with a fresh bootstrap token; its credential authenticates agent calls."""
        token = self.ok("POST", "enrollment-tokens", self.admin(), json={"group": group})["token"]
        pc = PCKey(hostname)
        answer = self.ok("POST", "agents/enroll", json={"token": token, **pc.signed("enroll", "token", token)})
        return EnrolledPC(pc, answer["agent_id"], answer["credential"])

    def ticket(self, token: str, title: str = "Printer offline", **fields: Any) -> str:
        """Open a ticket; return its number."""
        return self.ok("POST", "tickets", token, json={"title": title, **fields})["number"]

    def pairing_code(self, token: str, number: str) -> dict[str, Any]:
        return self.ok("POST", f"tickets/{number}/pairing-codes", token)

    def audit(self, action: str) -> list[AuditEvent]:
        """The audit events named ``action``, oldest first."""
        with self.db() as session:
            return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))

    def failures(self, key: str) -> int:
        """Failures counted for rate-limit ``key`` in its stored window (0 if none)."""
        with self.db() as session:
            row = session.get(RateLimitWindow, key)
            return row.count if row else 0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server_settings(tmp_path: Path, new_database) -> ServerSettings:
    """Settings for an in-process server on a fresh database of the test's backend; override fields per test."""
    return ServerSettings(data_dir=tmp_path / "server", database_url=new_database(), secret_key=secrets.token_urlsafe(32))


@pytest.fixture
def runtime(server_settings: ServerSettings, clock: Clock) -> Iterator[ServerRuntime]:
    """A runtime on an up-to-date schema, telling time by ``clock``."""
    runtime = build_runtime(server_settings, clock=clock)
    upgrade(runtime.engine)
    try:
        yield runtime
    finally:
        runtime.engine.dispose()


@pytest.fixture
def helpline(runtime: ServerRuntime, clock: Clock) -> Iterator[Helpline]:
    """The app serving ``runtime`` in-process, called from :data:`CLIENT_IP`."""
    client = TestClient(create_app(runtime), raise_server_exceptions=False, client=(CLIENT_IP, 50000))
    try:
        yield Helpline(runtime, client, clock)
    finally:
        client.close()
