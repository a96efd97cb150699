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
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.live import PC, LiveServer

# Property tests search fresh random examples on a developer's machine, where a failure is a lead to follow; in
# CI they replay the same examples every run (derandomized), so a build fails for a change, never for a draw.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

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


@pytest.fixture(scope="session")
def initialised_template(tmp_path_factory, request) -> Callable[[str], tuple[Path, str | None]]:
    """Per backend, one database that `helpline server init` set up (schema, first admin), made once.

    Test servers start from copies of it instead of running init each time: the
    same result, seconds sooner per test. Returns (template data folder, template
    database name on PostgreSQL or None).
    """
    made: dict[str, tuple[Path, str | None]] = {}

    def template(backend: str) -> tuple[Path, str | None]:
        if backend not in made:
            folder = tmp_path_factory.mktemp(f"template-{backend}") / "data"
            name, url = None, None
            if backend == "postgresql":
                name = f"tmpl_{uuid.uuid4().hex[:12]}"
                url = request.getfixturevalue("pg_cluster").create_database(name)
            LiveServer(data_dir=folder, database_url=url).init()
            made[backend] = (folder, name)
        return made[backend]

    return template


@pytest.fixture
def new_database(backend, request) -> Callable[[], str | None]:
    """Return a maker of fresh, empty databases on the test's backend (None: SQLite in the data dir)."""
    if backend == "sqlite":
        return lambda: None
    cluster = request.getfixturevalue("pg_cluster")
    return lambda: cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def new_server_database(backend, request, initialised_template) -> Callable[[], tuple[str | None, Path]]:
    """Return a maker of fresh databases already set up by init: (URL, or None for SQLite; the template folder)."""
    folder, template_name = initialised_template(backend)
    if backend == "sqlite":
        return lambda: (None, folder)
    cluster = request.getfixturevalue("pg_cluster")
    return lambda: (cluster.create_database(f"t_{uuid.uuid4().hex[:12]}", template=template_name), folder)


@pytest.fixture
def server_factory(tmp_path, new_server_database) -> Iterator[Callable[..., LiveServer]]:
    """Make started servers on the test's backend; each may take extra HELPLINE_* settings."""
    servers: list[LiveServer] = []

    def make(**env: str) -> LiveServer:
        database_url, template = new_server_database()
        server = LiveServer(
            data_dir=tmp_path / f"server{len(servers)}",
            database_url=database_url,
            env={f"HELPLINE_{k.upper()}": str(v) for k, v in env.items()},
            template=template,
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


# Journeys whose server work depends on the database (restarts, jobs, uploads and quotas, counters of failed
# attempts, enrollment) run on both backends; the other journeys run on SQLite only, because what they check is
# the CLI and the server's logic, which the in-process tests already run on both backends.
# HELPLINE_E2E_ALL_DATABASES=1 runs every journey on every backend.
BOTH_BACKEND_JOURNEYS = frozenset({
    "test_enrollment.py", "test_fleet_identity.py", "test_guessing_locks_nobody_out.py", "test_jobs.py",
    "test_pairing_and_status.py", "test_restart.py", "test_server_backup.py", "test_upload.py", "test_upload_quotas.py",
})


def _journey_left_to_sqlite(item) -> bool:
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec else None
    return (backend == "postgresql" and "sqlite" in BACKENDS and item.path.name not in BOTH_BACKEND_JOURNEYS
            and os.environ.get("HELPLINE_E2E_ALL_DATABASES") != "1")


def pytest_collection_modifyitems(config, items) -> None:
    """Everything under tests/e2e is end to end, marked or not, so `-m "not e2e"` selects the fast tests.

    Journeys outside :data:`BOTH_BACKEND_JOURNEYS` are deselected on PostgreSQL when SQLite runs too.
    """
    e2e_dir = os.path.join(os.path.dirname(__file__), "e2e") + os.sep
    kept, left = [], []
    for item in items:
        if str(item.path).startswith(e2e_dir):
            item.add_marker(pytest.mark.e2e)
            if _journey_left_to_sqlite(item):
                left.append(item)
                continue
        kept.append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept
