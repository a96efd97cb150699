"""The server in this process: a runtime on a fresh database and an httpx client over ASGI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import agent_requests

from protocol.schemas import AccountCreate, Role
from server.accounts import create_account
from server.app import create_app
from server.audit import Actor
from server.db import transaction, utcnow
from server.migrate import upgrade
from server.models import ApiToken
from server.runtime import ServerRuntime, build_runtime
from server.security import TOKEN_PREFIX_USER, new_token, token_digest
from server.settings import ServerSettings


@contextmanager
def runtime(data_dir: Path, database_url: str | None, **settings) -> Iterator[ServerRuntime]:
    """A migrated runtime on ``database_url`` (None: SQLite in ``data_dir``), disposed afterwards."""
    state = build_runtime(ServerSettings(data_dir=data_dir, database_url=database_url, dev=True, **settings))
    try:
        upgrade(state.engine)
        yield state
    finally:
        state.engine.dispose()


def engineer_token(state: ServerRuntime, username: str = "alice") -> str:
    """Create an engineer account and return an API token for it (as logging in would)."""
    token = new_token(TOKEN_PREFIX_USER)
    with transaction(state.sessions) as session:
        account = create_account(session, Actor.system("test"), AccountCreate(username=username, password="p" * 6 + "-pass-long", role=Role.ENGINEER))
        session.add(ApiToken(account=account, token_hash=token_digest(token), name="test", created_at=utcnow(),
                             expires_at=utcnow() + timedelta(hours=1)))
    return token


class AgentSigning(httpx.Auth):
    """Signs each request as agent ``agent_id`` with ``key``, the way the agent does."""

    requires_request_body = True

    def __init__(self, agent_id: str, key: Ed25519PrivateKey):
        self.agent_id, self.key = agent_id, key

    def auth_flow(self, request: httpx.Request):
        request.headers.update(agent_requests.sign_request(
            self.key, agent_id=self.agent_id, method=request.method, target=request.url.raw_path.decode(),
            content_sha256=agent_requests.body_digest(request.content), now=utcnow()))
        yield request


def client(state: ServerRuntime, token: str | None = None, *, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    """An async client that calls the app in this process (no lifespan: background jobs do not run)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(state)), base_url="http://helpline.test",
                             headers=headers, auth=auth, timeout=60)
