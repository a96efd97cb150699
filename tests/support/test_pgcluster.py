"""The throwaway PostgreSQL cluster: it starts, serves SQLAlchemy on loopback only, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.pgcluster import PgCluster, PgClusterError, find_bindir

REPO = Path(__file__).resolve().parents[2]

# Like tests/conftest.py: without the server binaries, skip, except in CI where it is a failure.
needs_postgres = pytest.mark.skipif(
    find_bindir() is None and not os.environ.get("CI"), reason="PostgreSQL server binaries are not installed"
)


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@pytest.mark.postgres
@needs_postgres
def test_cluster_serves_sqlalchemy_and_leaves_nothing_behind() -> None:
    with PgCluster() as cluster:
        assert cluster.url == f"postgresql+psycopg://helpline@127.0.0.1:{cluster.port}/helpline_test"
        base_dir, port, pid = cluster.base_dir, cluster.port, cluster.pid
        assert base_dir is not None and port is not None and pid is not None
        assert cluster.started_in is not None and cluster.started_in < 30
        if os.geteuid() == 0:
            assert process_uid(pid) != 0, "PostgreSQL must not run as root"

        engine = sa.create_engine(cluster.url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text("CREATE TABLE tickets (number integer PRIMARY KEY, title text)"))
                connection.execute(sa.text("INSERT INTO tickets VALUES (1042, 'Outlook will not start — ünïcode')"))
            with engine.connect() as connection:
                title = connection.execute(sa.text("SELECT title FROM tickets WHERE number = 1042")).scalar_one()
                assert title == "Outlook will not start — ünïcode"
                names = ("listen_addresses", "fsync", "synchronous_commit", "full_page_writes", "server_encoding")
                settings = {name: connection.execute(sa.text(f"SHOW {name}")).scalar_one() for name in names}
                assert settings == {
                    "listen_addresses": "127.0.0.1",
                    "fsync": "off",
                    "synchronous_commit": "off",
                    "full_page_writes": "off",
                    "server_encoding": "UTF8",
                }
                socket_dir = connection.execute(sa.text("SHOW unix_socket_directories")).scalar_one()
                assert Path(socket_dir).is_relative_to(base_dir)
        finally:
            engine.dispose()

        other_url = cluster.create_database("t_other")
        assert other_url.endswith(f":{port}/t_other")
        other = sa.create_engine(other_url)
        try:
            with other.connect() as connection:
                assert connection.execute(sa.text("SELECT to_regclass('tickets')")).scalar_one() is None
        finally:
            other.dispose()
        cluster.drop_database("t_other")
        with pytest.raises(ValueError):
            cluster.create_database("bad name; DROP DATABASE helpline_test")
        assert port_is_open(port)

    assert not port_is_open(port)
    assert not base_dir.exists()
    assert cluster.base_dir is None
    cluster.stop()  # idempotent


@pytest.mark.postgres
@needs_postgres
def test_command_line_start_and_stop(tmp_path: Path) -> None:
    state_file = tmp_path / "pg.json"

    def pgcluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.support.pgcluster", *args, "--state-file", str(state_file)],
            cwd=REPO, capture_output=True, text=True, timeout=90,
        )  # fmt: skip

    started = pgcluster("start")
    assert started.returncode == 0, started.stderr
    try:
        url = started.stdout.strip()
        state = json.loads(state_file.read_text())
        assert state["url"] == url and Path(state["datadir"]).is_dir()
        engine = sa.create_engine(url)
        try:
            with engine.connect() as connection:
                assert connection.execute(sa.text("SELECT current_database()")).scalar_one() == "helpline_test"
        finally:
            engine.dispose()
        again = pgcluster("start")
        assert again.returncode == 1 and "stop that cluster first" in again.stderr
        created = pgcluster("create-db", "t_cli")
        assert created.returncode == 0 and created.stdout.strip().endswith("/t_cli")
    finally:
        stopped = pgcluster("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not state_file.exists()
    assert not port_is_open(state["port"])
    assert not Path(state["base_dir"]).exists()
    assert pgcluster("stop").returncode == 0  # nothing left to stop


def test_missing_binaries_are_reported(tmp_path: Path) -> None:
    with pytest.raises(PgClusterError, match=r"initdb, pg_ctl, postgres\) not found"):
        PgCluster(bindir=tmp_path).start()
    assert not list(tmp_path.iterdir())


def test_urls_need_a_started_cluster() -> None:
    with pytest.raises(PgClusterError, match="not started"):
        PgCluster().url  # noqa: B018 - the property raises


@pytest.mark.postgres
@needs_postgres
def test_a_port_taken_meanwhile_costs_one_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import pgcluster

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = pgcluster.free_port
        monkeypatch.setattr(pgcluster, "free_port", lambda: next(ports, None) or real_free_port())
        with PgCluster() as cluster:
            assert cluster.port != taken
            assert "could not bind" in cluster.log_file.read_text()
            engine = sa.create_engine(cluster.url)
            try:
                with engine.connect() as connection:
                    assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
            finally:
                engine.dispose()
