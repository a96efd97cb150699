"""Shared fixtures: the database backends, live servers and PCs running the real CLI.

Every test that takes ``live_server`` runs once on SQLite and once on a real
PostgreSQL (a throwaway cluster on loopback). Set HELPLINE_TEST_DATABASES to
choose (default ``sqlite,postgresql``); in CI a missing PostgreSQL is a failure,
elsewhere a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.live import PC, LiveServer

BACKENDS = [b.strip() for b in os.environ.get("HELPLINE_TEST_DATABASES", "sqlite,postgresql").split(",") if b.strip()]


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the whole run, or a skip/failure if there is none."""
    from tests.support.pgcluster import PgCluster, find_bindir

    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing; the README's test command installs them")
        pytest.skip("PostgreSQL server binaries are not installed")
    cluster = PgCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def new_database(backend, request) -> Callable[[], str | None]:
    """Return a maker of fresh databases on the test's backend (None: SQLite in the data dir)."""
    if backend == "sqlite":
        return lambda: None
    cluster = request.getfixturevalue("pg_cluster")
    return lambda: cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def server_factory(tmp_path, new_database) -> Iterator[Callable[..., LiveServer]]:
    """Make started servers on the test's backend; each may take extra HELPLINE_* settings."""
    servers: list[LiveServer] = []

    def make(**env: str) -> LiveServer:
        server = LiveServer(
            data_dir=tmp_path / f"server{len(servers)}",
            database_url=new_database(),
            env={f"HELPLINE_{k.upper()}": str(v) for k, v in env.items()},
        )
        servers.append(server)
        server.init()
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(server_factory) -> LiveServer:
    return server_factory()


@pytest.fixture
def make_pc(tmp_path) -> Callable[[str], PC]:
    return lambda name: PC(tmp_path, name)


@pytest.fixture
def admin_pc(make_pc, live_server) -> PC:
    """The admin's computer, logged in to ``live_server``."""
    pc = make_pc("admin")
    pc.login(live_server)
    return pc


def pytest_collection_modifyitems(config, items) -> None:
    """Everything under tests/e2e is end to end, marked or not, so `-m "not e2e"` selects the fast tests."""
    e2e_dir = os.path.join(os.path.dirname(__file__), "e2e") + os.sep
    for item in items:
        if str(item.path).startswith(e2e_dir):
            item.add_marker(pytest.mark.e2e)
