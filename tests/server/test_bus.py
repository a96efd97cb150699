"""The doorbell across server processes (server.bus) against the real PostgreSQL of the tests: a ring on one
doorbell wakes the waiter of another that shares the database, each name once, never echoed to its own
process; a listener whose connection is cut comes back and wakes every waiter; rings too long for NOTIFY stay
local; SQLite has no bus."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from server.bus import DoorbellBus, doorbell_bus, libpq_url
from server.doorbell import Doorbell
from server.settings import ServerSettings

DEADLINE = 20.0  # the longest any wake-up below may take before the test fails


@pytest.fixture
def database(pg_cluster) -> str:
    return pg_cluster.create_database(f"bus_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def pair(database):
    """Two doorbells, as two server processes have, each with its bus on the same database, both listening."""
    made = []
    for _ in range(2):
        bus = DoorbellBus(Doorbell(), database, "helpline_doorbell", reconnect_max_seconds=1.0)
        bus.start()
        made.append(bus)
    try:
        for bus in made:
            assert bus.wait_up(DEADLINE), "the bus never connected"
        yield made
    finally:
        for bus in made:
            bus.stop()


async def _woken(doorbell: Doorbell, name: str, ring) -> bool:
    """Listen on ``name``, call ``ring()`` (in a thread, as routes do), and say whether the bell rang in time."""
    with doorbell.listening(name) as rung:
        await asyncio.to_thread(ring)
        try:
            await asyncio.wait_for(rung.wait(), DEADLINE)
        except TimeoutError:
            return False
        return True


def test_a_ring_in_one_process_wakes_a_waiter_in_the_other(pair):
    a, b = pair
    assert asyncio.run(_woken(b.doorbell, "agent:1234", lambda: a.doorbell.ring("agent:1234")))
    assert asyncio.run(_woken(a.doorbell, "end:5678", lambda: b.doorbell.ring("end:5678")))
    assert a.heard >= 1 and b.heard >= 1


def test_a_process_does_not_hear_its_own_rings_twice(pair):
    a, b = pair
    assert asyncio.run(_woken(b.doorbell, "pc-request:9", lambda: a.doorbell.ring("pc-request:9")))
    # b heard a's ring; a, which rang its own waiters directly, skipped its echo. One more round trip
    # (b -> a) proves a's listener had read past its own notification by then.
    assert asyncio.run(_woken(a.doorbell, "pc-request:10", lambda: b.doorbell.ring("pc-request:10")))
    assert a.heard == 1


def test_only_the_named_bell_rings(pair):
    a, b = pair

    async def both() -> tuple[bool, bool]:
        with b.doorbell.listening("other") as other:
            woken = await _woken(b.doorbell, "mine", lambda: a.doorbell.ring("mine"))
            return woken, other.is_set()

    assert asyncio.run(both()) == (True, False)


def test_a_cut_listening_connection_comes_back_and_wakes_every_waiter(pair, database):
    a, b = pair

    def cut() -> None:
        with psycopg.connect(libpq_url(database), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%%'")

    before = b.connects
    # Nobody rings "waiting": the waiter wakes because the listener came back (rings may have been missed).
    assert asyncio.run(_woken(b.doorbell, "waiting", cut))
    assert b.connects > before
    assert b.wait_up(DEADLINE)
    assert asyncio.run(_woken(b.doorbell, "after", lambda: a.doorbell.ring("after")))


def test_a_name_too_long_for_notify_rings_here_only(database):
    bus = DoorbellBus(Doorbell(), database, "helpline_doorbell")  # not started: what is queued stays queued
    bus.doorbell.transport = bus
    bus.doorbell.ring("y" * 8000)
    assert bus._outbox.empty()
    bus.doorbell.ring("agent:short")
    assert bus._outbox.get_nowait() == "agent:short"

    async def local() -> bool:
        return await _woken(bus.doorbell, "y" * 8000, lambda: bus.doorbell.ring("y" * 8000))

    assert asyncio.run(local())


def test_stopping_detaches_from_the_doorbell(database):
    bus = DoorbellBus(Doorbell(), database, "helpline_doorbell")
    bus.start()
    assert bus.doorbell.transport is bus
    bus.stop()
    assert bus.doorbell.transport is None and not bus.up


def test_sqlite_has_no_bus_and_postgresql_has_one_unless_turned_off(tmp_path, database):
    settings = ServerSettings(data_dir=tmp_path)
    assert doorbell_bus(Doorbell(), settings, settings.resolved_database_url) is None
    assert isinstance(doorbell_bus(Doorbell(), settings, database), DoorbellBus)
    off = ServerSettings(data_dir=tmp_path, bus={"enabled": False})
    assert doorbell_bus(Doorbell(), off, database) is None


def test_the_advertise_url_defaults_to_the_bind_address_and_must_be_a_plain_base_url(tmp_path):
    assert ServerSettings(data_dir=tmp_path, port=8123).resolved_advertise_url == "http://127.0.0.1:8123"
    assert ServerSettings(data_dir=tmp_path, host="::1", port=8123).resolved_advertise_url == "http://[::1]:8123"
    everywhere = ServerSettings(data_dir=tmp_path, host="0.0.0.0", port=8123).resolved_advertise_url
    assert everywhere.startswith("http://") and "0.0.0.0" not in everywhere
    given = ServerSettings(data_dir=tmp_path, bus={"advertise_url": "https://10.0.0.11:8700/"})
    assert given.resolved_advertise_url == "https://10.0.0.11:8700"
    for bad in ("10.0.0.11:8700", "http://user:pw@10.0.0.11", "http://10.0.0.11/?x=1", "ftp://10.0.0.11"):
        with pytest.raises(ValueError):
            ServerSettings(data_dir=tmp_path, bus={"advertise_url": bad})


def test_long_polls_look_rarely_only_while_every_ring_is_heard(tmp_path, database):
    from server.runtime import build_runtime

    on_sqlite = build_runtime(ServerSettings(data_dir=tmp_path / "one", bus={"safety_look_seconds": 40}))
    on_postgresql = build_runtime(ServerSettings(data_dir=tmp_path / "two", database_url=database,
                                                 bus={"safety_look_seconds": 40}))
    try:
        assert on_sqlite.bus is None and on_sqlite.look_every(5.0) == 40  # one process: its doorbell hears all
        assert on_postgresql.look_every(5.0) == 5.0  # the bus is not up yet: other processes' rings may be missed
        on_postgresql.bus.start()
        assert on_postgresql.bus.wait_up(DEADLINE)
        assert on_postgresql.look_every(5.0) == 40
        on_postgresql.bus.stop()
        assert on_postgresql.look_every(5.0) == 5.0
    finally:
        for runtime in (on_sqlite, on_postgresql):
            runtime.engine.dispose()
