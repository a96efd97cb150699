"""Reads never take the write lock, writers take it late, bookkeeping is coalesced, and
many concurrent requests queue for the database instead of failing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from protocol import signing
from server.db import ReadOnlySessionError, read_sessions, transaction, utcnow, write_sessions
from server.models import Agent, ApiToken, Counter, Ticket
from server.security import TOKEN_PREFIX_AGENT, new_token, token_digest
from tests.support.inprocess import AgentSigning, client, engineer_token, runtime


@pytest.fixture
def sqlite_state(tmp_path):
    with runtime(tmp_path, None) as state:
        yield state


@pytest.fixture
def state(tmp_path, new_database):
    with runtime(tmp_path, new_database()) as state:
        yield state


def _hold_write_lock(state) -> sqlite3.Connection:
    """Take SQLite's write lock from another connection, as a long writer would."""
    conn = sqlite3.connect(state.engine.url.database, isolation_level=None, timeout=0.1)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _write_lock_free(state) -> bool:
    conn = sqlite3.connect(state.engine.url.database, isolation_level=None, timeout=0.1)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def _write_statements(state) -> list[str]:
    """A list that fills with every statement other than SELECT/PRAGMA the engine runs from now on."""
    seen: list[str] = []

    @event.listens_for(state.engine, "before_cursor_execute")
    def _note(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().split(None, 1)[0].upper() not in ("SELECT", "PRAGMA", "BEGIN", "COMMIT", "ROLLBACK"):
            seen.append(statement)

    return seen


def test_reads_answer_while_a_writer_holds_the_lock(sqlite_state):
    token = engineer_token(sqlite_state)

    async def scenario():
        async with client(sqlite_state, token) as api:
            assert (await api.post("/v1/tickets", json={"title": "Printer jams"})).status_code == 201
            assert (await api.get("/v1/tickets")).status_code == 200  # records the token's first use
            writer = _hold_write_lock(sqlite_state)
            try:
                started = time.monotonic()
                listed = await asyncio.wait_for(api.get("/v1/tickets"), timeout=10)
                shown = await asyncio.wait_for(api.get(f"/v1/tickets/{listed.json()[0]['number']}"), timeout=10)
                elapsed = time.monotonic() - started
            finally:
                writer.execute("ROLLBACK")
                writer.close()
        assert listed.status_code == 200 and [t["title"] for t in listed.json()] == ["Printer jams"]
        assert shown.status_code == 200
        assert elapsed < 5  # not the 30 s busy timeout

    asyncio.run(scenario())


def test_read_session_refuses_to_write(state):
    with pytest.raises(ReadOnlySessionError), transaction(read_sessions(state.engine)) as session:
        session.add(Counter(name="x", value=1))
        session.flush()
    with pytest.raises(ReadOnlySessionError), transaction(read_sessions(state.engine)) as session:
        session.execute(update(Counter).values(value=2))
    with transaction(state.sessions) as session:
        assert session.scalar(select(Counter).where(Counter.name == "x")) is None


def test_sqlite_writer_takes_the_lock_at_its_first_write(sqlite_state):
    with transaction(write_sessions(sqlite_state.engine)) as session:
        session.add(Counter(name="c", value=1))
    session = write_sessions(sqlite_state.engine)()
    try:
        assert session.scalar(select(Counter.value).where(Counter.name == "c")) == 1
        assert _write_lock_free(sqlite_state)  # reading took no lock
        session.execute(update(Counter).where(Counter.name == "c").values(value=Counter.value + 1))
        assert not _write_lock_free(sqlite_state)  # writing did, until commit
        session.commit()
        assert _write_lock_free(sqlite_state)
    finally:
        session.close()


def test_burst_of_reads_writes_last_used_once(state):
    token = engineer_token(state)
    digest = token_digest(token)

    def last_used():
        with transaction(state.sessions) as session:
            return session.scalar(select(ApiToken.last_used_at).where(ApiToken.token_hash == digest))

    async def burst(n: int) -> list[int]:
        async with client(state, token) as api:
            return [r.status_code for r in await asyncio.gather(*(api.get("/v1/tickets") for _ in range(n)))]

    assert asyncio.run(burst(1)) == [200]
    first = last_used()
    assert first is not None and utcnow() - first < timedelta(seconds=30)
    writes = _write_statements(state)
    assert asyncio.run(burst(20)) == [200] * 20
    assert writes == [] and last_used() == first
    with transaction(state.sessions) as session:  # a minute later...
        session.execute(update(ApiToken).where(ApiToken.token_hash == digest).values(last_used_at=utcnow() - timedelta(seconds=90)))
    assert asyncio.run(burst(5)) == [200] * 5
    assert last_used() > first
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in writes) >= 1


def test_agent_reads_write_last_seen_once_and_only_their_nonces(state):
    key = signing.generate_key()
    agent_id = str(uuid.uuid4())
    with transaction(state.sessions) as session:
        session.add(Agent(id=agent_id, public_key=signing.public_key_b64(key), hostname="pc-1",
                          credential_hash=token_digest(new_token(TOKEN_PREFIX_AGENT)), created_at=utcnow()))

    async def burst(n: int) -> list[int]:
        async with client(state, auth=AgentSigning(agent_id, key)) as api:
            return [r.status_code for r in await asyncio.gather(*(api.get("/v1/agent/tickets") for _ in range(n)))]

    def last_seen():
        with transaction(state.sessions) as session:
            return session.get(Agent, agent_id).last_seen_at

    assert asyncio.run(burst(1)) == [200]
    first = last_seen()
    assert first is not None
    writes = _write_statements(state)
    assert asyncio.run(burst(10)) == [200] * 10
    # Each signed request uses up its nonce (a replay must find it); nothing else is written.
    assert len(writes) == 10 and all("INSERT INTO agent_nonces" in w for w in writes) and last_seen() == first


def test_many_concurrent_requests_queue_for_a_small_pool(tmp_path, new_database):
    """More requests than connections and threads: they wait their turn, and none fails."""
    with runtime(tmp_path, new_database(), database_pool_size=2, database_pool_overflow=1) as state:
        state.engine.pool._timeout = 5  # a request stuck waiting for a connection fails fast, not in 30 s
        token = engineer_token(state)

        async def scenario():
            import anyio

            anyio.to_thread.current_default_thread_limiter().total_tokens = 8
            async with client(state, token) as api:
                reads = [api.get("/v1/tickets") for _ in range(160)]
                writes = [api.post("/v1/tickets", json={"title": f"load {i}"}) for i in range(40)]
                return await asyncio.wait_for(asyncio.gather(*reads, *writes), timeout=120)

        responses = asyncio.run(scenario())
        assert [r.status_code for r in responses[:160]] == [200] * 160
        assert [r.status_code for r in responses[160:]] == [201] * 40
        with transaction(state.sessions) as session:
            numbers = session.scalars(select(Ticket.number)).all()
        assert len(set(numbers)) == 40


def test_routes_that_change_things_take_write_sessions():
    """A mutating route on a read session would fail at its first write; a GET that writes says so."""
    from fastapi.routing import APIRoute

    from server.api import accounts, agents, audit, auth, health, keys, policies, restic_rest, tickets, uploads
    from server.api.deps import _takes_write_session, get_session

    def uses_session(dependant) -> bool:
        return any(d.call is get_session or uses_session(d) for d in dependant.dependencies)

    routes = [r for module in (accounts, agents, audit, auth, health, keys, tickets, uploads, restic_rest, policies)
              for r in module.router.routes
              if isinstance(r, APIRoute) and uses_session(r.dependant)]
    assert len(routes) > 20
    writers = {(m, r.path) for r in routes for m in r.methods if _takes_write_session(r.dependant)}
    readers = {(m, r.path) for r in routes for m in r.methods if not _takes_write_session(r.dependant)}
    assert {m for m, _ in readers} == {"GET"}
    assert ("GET", "/v1/bundles/{bundle_id}/archive") in writers  # the download is audited
    assert {("GET", "/v1/tickets"), ("GET", "/v1/tickets/{number}"), ("GET", "/v1/me")} <= readers
    from starlette.requests import Request

    from server.api.deps import _route_writes

    for route in routes:  # what a request on the route gets
        assert _route_writes(Request({"type": "http", "route": route})) == _takes_write_session(route.dependant)
