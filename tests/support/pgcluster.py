"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests, from Python or a shell script.

:class:`PgCluster` runs ``initdb`` into a temp directory, starts ``postgres`` on a
free loopback port (no TCP other than 127.0.0.1, sockets inside the temp dir,
trust auth on loopback only, fsync off for speed), creates the database
``helpline_test`` and hands out SQLAlchemy URLs. :meth:`PgCluster.stop` shuts it
down (``pg_ctl stop -m fast``, then signals by PID) and removes the temp dir.

PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user (or ``helpline-pg``, created if neither exists) through
``runuser``; a developer's own account runs it directly.

From a shell script, at the repository root (``tests`` is a namespace package;
running the file by path, ``python tests/support/pgcluster.py``, works too)::

    URL=$(.venv/bin/python -m tests.support.pgcluster start --state-file .pg.json)
    .venv/bin/python -m tests.support.pgcluster create-db t_extra --state-file .pg.json
    .venv/bin/python -m tests.support.pgcluster stop --state-file .pg.json

``start`` prints the URL of ``helpline_test`` and writes the state (pid,
datadir, url, ...) as JSON; ``stop`` reads it, stops the cluster, removes the
file, and does nothing if the file is absent. Exit status 0 on success, 1 on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
DB_USER = "helpline"
TEST_DATABASE = "helpline_test"
FALLBACK_OS_USER = "helpline-pg"
POLL_INTERVAL = 0.1
_BINARIES = ("initdb", "pg_ctl", "postgres")
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PgClusterError(RuntimeError):
    """The cluster could not be set up, started or stopped; the message says why."""


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _BINARIES)


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_bindir() -> Path | None:
    """Return the folder holding initdb, pg_ctl and postgres, or None if they are not installed.

    Looks at $HELPLINE_PG_BINDIR, then ``pg_config --bindir``, then the newest
    /usr/lib/postgresql/*/bin (Debian), then PATH.
    """
    candidates: list[str] = []
    if os.environ.get("HELPLINE_PG_BINDIR"):
        candidates.append(os.environ["HELPLINE_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if result.returncode == 0:
                candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        if candidate and _has_server_binaries(Path(candidate)):
            return Path(candidate)
    return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for an init that does not reap counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_INTERVAL) + 1):
        if not _pid_alive(pid):
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL)
    return not _pid_alive(pid)


def _service_user() -> pwd.struct_passwd:
    """Return the system user that runs PostgreSQL for root, creating ``helpline-pg`` if needed."""
    for name in ("postgres", FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", shell, FALLBACK_OS_USER],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise PgClusterError(f"cannot create the system user {FALLBACK_OS_USER}: {result.stderr.strip()}")
    return pwd.getpwnam(FALLBACK_OS_USER)


class PgCluster:
    """One PostgreSQL cluster in a temp directory, listening on 127.0.0.1 only.

    Use ``start()`` / ``stop()`` or ``with PgCluster() as cluster:``; ``url`` is the
    SQLAlchemy URL of ``helpline_test``, ``create_database(name)`` makes another.
    ``temp_root`` (default: the system temp dir) must be traversable by the
    PostgreSQL user when running as root.
    """

    def __init__(self, *, bindir: Path | None = None, temp_root: Path | None = None, start_timeout: float = 30.0):
        self.bindir = bindir
        self.temp_root = temp_root
        self.start_timeout = start_timeout
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self.os_user: str | None = None  # None: runs as the current user
        self.started_in: float | None = None  # seconds from initdb to accepting connections

    # -- paths and URLs

    @property
    def datadir(self) -> Path:
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base() / "sockets"

    @property
    def log_file(self) -> Path:
        return self._base() / "postgres.log"

    @property
    def url(self) -> str:
        return self.database_url(TEST_DATABASE)

    def database_url(self, name: str) -> str:
        """Return the SQLAlchemy (psycopg 3) URL of database ``name`` on this cluster."""
        if self.port is None:
            raise PgClusterError("the cluster is not started")
        return f"postgresql+psycopg://{DB_USER}@{HOST}:{self.port}/{name}"

    def _base(self) -> Path:
        if self.base_dir is None:
            raise PgClusterError("the cluster is not started")
        return self.base_dir

    # -- running commands

    def _command(self, *argv: str | os.PathLike[str]) -> list[str]:
        prefix = ["runuser", "-u", self.os_user, "--"] if self.os_user else []
        return prefix + [os.fspath(arg) for arg in argv]

    def _run(self, *argv: str | os.PathLike[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's user, output to a file (postgres may inherit it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        output = self._base() / "commands.log"
        with open(output, "a") as log:
            log.write(f"$ {' '.join(map(str, argv))}\n")
            log.flush()
            start = log.tell()
            try:
                returncode = subprocess.run(
                    self._command(*argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._base(),
                    env=env,
                    timeout=timeout,
                ).returncode
            except subprocess.TimeoutExpired:
                returncode = -1
        with open(output) as log:
            log.seek(start)
            text = log.read()
        return subprocess.CompletedProcess(argv, returncode, text, "")

    def _tool(self, name: str) -> Path:
        assert self.bindir is not None
        return self.bindir / name

    # -- lifecycle

    def start(self) -> str:
        """Create and start the cluster, create ``helpline_test``, and return its URL."""
        if self.base_dir is not None:
            raise PgClusterError("the cluster is already started")
        began = time.monotonic()
        self.bindir = self.bindir or find_bindir()
        if self.bindir is None or not _has_server_binaries(self.bindir):
            raise PgClusterError(
                f"PostgreSQL server binaries ({', '.join(_BINARIES)}) not found"
                + (f" in {self.bindir}" if self.bindir else "")
                + "; install the postgresql package or set HELPLINE_PG_BINDIR"
            )
        self.base_dir = Path(tempfile.mkdtemp(prefix="helpline-pg-", dir=self.temp_root))
        try:
            self._prepare()
            self._initdb()
            self._configure()
            self._start_server()
            self._wait_accepting(began + self.start_timeout)
            self.create_database(TEST_DATABASE)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self.url

    def _prepare(self) -> None:
        base = self._base()
        self.socket_dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PgClusterError("running as root needs runuser (util-linux) to start PostgreSQL as another user")
            user = _service_user()
            self.os_user = user.pw_name
            for path in (base, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        base.chmod(0o700)
        if len(os.fsencode(self.socket_dir)) > 90:  # sun_path is 108 bytes with the socket name
            raise PgClusterError(f"temp directory path too long for a Unix socket: {self.socket_dir}")

    def _initdb(self) -> None:
        result = self._run(
            self._tool("initdb"), "-D", self.datadir, "-U", DB_USER, "-E", "UTF8", "--locale=C",
            "--auth=trust", "--no-sync",
            timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise PgClusterError(f"initdb failed ({result.returncode}):\n{_tail(result.stdout)}")

    def _configure(self) -> None:
        settings = {
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# helpline tests\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        # Trust, but only over the private socket and IPv4 loopback.
        (self.datadir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    def _start_server(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            result = self._run(
                self._tool("pg_ctl"), "-D", self.datadir, "-l", self.log_file, "-o", f"-p {self.port}",
                "-w", "-t", str(int(self.start_timeout)), "start",
                timeout=self.start_timeout + 10,
            )  # fmt: skip
            self.pid = self._read_pid()
            if result.returncode == 0 and self.pid is not None:
                return
            log = self._log_tail()
            if "could not bind" in log and attempt + 1 < attempts:
                self._kill_leftover()
                continue  # someone took the port between choosing and binding it
            raise PgClusterError(f"PostgreSQL did not start ({result.returncode}):\n{_tail(result.stdout)}\n{log}")

    def _read_pid(self) -> int | None:
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def _wait_accepting(self, deadline: float) -> None:
        import psycopg

        error: Exception | None = None
        for _ in range(int(self.start_timeout / POLL_INTERVAL) + 1):
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                error = exc
            if time.monotonic() > deadline or (self.pid is not None and not _pid_alive(self.pid)):
                break
            time.sleep(POLL_INTERVAL)
        raise PgClusterError(
            f"PostgreSQL does not accept connections on {HOST}:{self.port}: {error}\n{self._log_tail()}"
        )

    def _dsn(self, dbname: str) -> str:
        return f"host={HOST} port={self.port} user={DB_USER} dbname={dbname}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (lowercase letters, digits, '_'), a copy of ``template`` if given; return its URL."""
        import psycopg
        from psycopg import sql

        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} must match {_DATABASE_NAME.pattern}")
        with psycopg.connect(self._dsn("postgres"), autocommit=True, connect_timeout=5) as connection:
            if template is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, closing its connections."""
        import psycopg
        from psycopg import sql

        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} must match {_DATABASE_NAME.pattern}")
        with psycopg.connect(self._dsn("postgres"), autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server (fast shutdown, then signals by PID) and remove the temp dir; idempotent."""
        if self.base_dir is None:
            return
        try:
            if self.datadir.exists() and self.bindir is not None:
                pid = self.pid or self._read_pid()
                if pid is not None and _pid_alive(pid):
                    pg_ctl = self._tool("pg_ctl")
                    self._run(pg_ctl, "-D", self.datadir, "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
                    if not _wait_gone(pid, 5):
                        self._kill(pid)
            self._kill_leftover()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
            self.pid = None

    def _kill_leftover(self) -> None:
        pid = self._read_pid()
        if pid is not None and _pid_alive(pid):
            self._kill(pid)

    @staticmethod
    def _kill(pid: int) -> None:
        """SIGQUIT (immediate shutdown) and then SIGKILL the postmaster ``pid``, waiting a bounded time."""
        for signum, wait in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            if _wait_gone(pid, wait):
                return
        raise PgClusterError(f"PostgreSQL (pid {pid}) survived SIGKILL")

    def _log_tail(self) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace"))
        except OSError:
            return "(no server log)"

    # -- state for the command line

    def state(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "port": self.port,
            "url": self.url,
            "datadir": str(self.datadir),
            "base_dir": str(self._base()),
            "bindir": str(self.bindir),
            "os_user": self.os_user,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PgCluster:
        """Return a handle on a running cluster described by :meth:`state` (for stop)."""
        cluster = cls(bindir=Path(state["bindir"]))
        cluster.base_dir = Path(state["base_dir"])
        cluster.port = int(state["port"])
        cluster.pid = int(state["pid"]) if state.get("pid") else None
        cluster.os_user = state.get("os_user")
        return cluster

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgcluster", description="A throwaway PostgreSQL cluster for tests.")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a cluster; print the URL of helpline_test")
    start.add_argument("--state-file", type=Path, required=True)
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)")
    create = commands.add_parser("create-db", help="create a database; print its URL")
    create.add_argument("name")
    create.add_argument("--state-file", type=Path, required=True)
    stop = commands.add_parser("stop", help="stop the cluster and remove its files")
    stop.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            if args.state_file.exists():
                raise PgClusterError(f"{args.state_file} exists: stop that cluster first")
            cluster = PgCluster(start_timeout=args.timeout)
            url = cluster.start()
            try:
                args.state_file.write_text(json.dumps(cluster.state(), indent=2) + "\n")
            except OSError:
                cluster.stop()
                raise
            print(url)
        elif args.command == "create-db":
            print(PgCluster.from_state(json.loads(args.state_file.read_text())).create_database(args.name))
        else:
            if not args.state_file.exists():
                print(f"pgcluster: no {args.state_file}; nothing to stop", file=sys.stderr)
                return 0
            PgCluster.from_state(json.loads(args.state_file.read_text())).stop()
            args.state_file.unlink()
    except (PgClusterError, OSError, ValueError, KeyError) as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
