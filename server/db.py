"""Database engine and sessions: SQLite by default, PostgreSQL by URL.

Requests use one of two kinds of session, made by :func:`read_sessions` and
:func:`write_sessions`:

- A **read session** never writes (a flush or a write statement raises
  :class:`ReadOnlySessionError`). On SQLite it opens a deferred ``BEGIN``: a
  consistent snapshot that takes no lock, so any number of readers run beside
  a writer (WAL). Bookkeeping a reader wants done (a token's last-used time)
  is queued with :func:`touch` and written after the session is closed, in
  its own short write transaction.
- A **write session** on SQLite reads without a transaction, like READ
  COMMITTED, and takes the one write lock (``BEGIN IMMEDIATE``) just before
  its first write statement, keeping it until commit. A writer therefore does
  its lookups, password hashing or signature checks before it holds the lock,
  and never upgrades a read snapshot to a write: that upgrade is what fails at
  once with SQLITE_BUSY_SNAPSHOT ("database is locked") when another writer
  committed in between, whereas ``BEGIN IMMEDIATE`` from no snapshot waits its
  turn (busy timeout). Code that must not hold the lock across slow work (the
  network, large files) keeps that work out of the session, as the upload
  routes do with one short :func:`transaction` per step.

On PostgreSQL both kinds are ordinary READ COMMITTED transactions; row locks
(``UPDATE ... WHERE``) do what the SQLite write lock does. Connections that are
not request sessions (migrations, ``server init``, scripts) keep the simplest
rule on SQLite: ``BEGIN IMMEDIATE`` when the transaction starts.

The pool is sized by the caller (:func:`create_db_engine`); the server admits
at most ``pool_size`` request sessions at once (see ``server.runtime``) and
keeps the overflow for background jobs and upload steps, so no request waits
for a connection while holding a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import DateTime, Engine, create_engine, event, inspect, or_, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, ORMExecuteState, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from protocol.errors import ConfigError, UnavailableError

SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_POOL_SIZE = 20
DEFAULT_POOL_OVERFLOW = 10

_TXN = "helpline_transaction"  # execution option: "read" or "write" for request sessions
_READ_ONLY = "read_only"  # Session.info flag
_TOUCHES = "touches"  # Session.info: bookkeeping updates to run after the session closes
_READ_STATEMENTS = ("SELECT", "PRAGMA", "EXPLAIN")
_WROTE = "helpline.wrote"  # Session.info flag: this transaction has written (flushed or executed a write)


class ReadOnlySessionError(RuntimeError):
    """A read session was asked to write: the route should take a write session."""


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Where a session carries its runtime's clock (server.runtime), for code that is handed only a session.
CLOCK_INFO = "helpline.clock"


def session_now(session: Session) -> datetime:
    """The time by the clock of the runtime ``session`` belongs to (the real time outside one)."""
    return session.info.get(CLOCK_INFO, utcnow)()


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def create_db_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_POOL_OVERFLOW) -> Engine:
    """Return an engine for ``url`` with ``pool_size`` + ``max_overflow`` connections at most;
    raise ConfigError if the URL is unusable."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database_url is not a database URL: {exc}.") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, parsed.database, pool_size, max_overflow)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
    raise ConfigError(f"Unsupported database {backend!r}.", hint="Use a sqlite:/// path or a postgresql:// URL.")


def _sqlite_engine(url: str, database: str | None, pool_size: int, max_overflow: int) -> Engine:
    if database and database != ":memory:":
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created owner-only before SQLite opens it: SQLite gives its -wal and -shm files the
        # database file's mode, so tokens' digests and bundles' summaries stay private whatever the umask.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=max_overflow,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        kind = conn.get_execution_options().get(_TXN)
        if kind == "read":
            conn.exec_driver_sql("BEGIN")
        elif kind != "write":  # a write session begins at its first write statement, below
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "before_cursor_execute")
    def _before_execute(conn, cursor, statement, parameters, context, executemany):
        if conn.get_execution_options().get(_TXN) != "write" or cursor.connection.in_transaction:
            return
        if statement.lstrip().split(None, 1)[0].upper() not in _READ_STATEMENTS:
            cursor.connection.execute("BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work outside requests (set-up, scripts); on SQLite they begin IMMEDIATE."""
    return sessionmaker(engine, expire_on_commit=False)


def read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions that only read: a snapshot without the write lock (SQLite) and a refusal to write."""
    return sessionmaker(engine.execution_options(**{_TXN: "read"}), expire_on_commit=False, info={_READ_ONLY: True})


def write_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions that may write; on SQLite they take the write lock at their first write statement."""
    return sessionmaker(engine.execution_options(**{_TXN: "write"}), expire_on_commit=False)


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, flush_context, instances) -> None:
    if session.info.get(_READ_ONLY) and (session.new or session.deleted or any(session.is_modified(o) for o in session.dirty)):
        raise ReadOnlySessionError("A read session cannot store changes.")


@event.listens_for(Session, "do_orm_execute")
def _refuse_write(state: ORMExecuteState) -> None:
    if state.session.info.get(_READ_ONLY) and not state.is_select:
        raise ReadOnlySessionError("A read session cannot run a write statement.")
    if not state.is_select:
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, flush_context) -> None:
    session.info[_WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_writes(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def is_read_only(session: Session) -> bool:
    """Whether ``session`` is a read session (see :func:`read_sessions`)."""
    return bool(session.info.get(_READ_ONLY))


def end_reads(session: Session) -> None:
    """End the read phase of ``session`` before slow work (password hashing): nothing stays held.

    The transaction, which has only read, is ended and its connection goes back
    to the pool, so the slow work holds no connection, snapshot or lock (on
    SQLite, no write lock however the session began). Loaded rows stay usable;
    the session starts a new transaction at its next statement. Raise
    RuntimeError if the session has already written: ending it here would
    commit half a request.
    """
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty) or session.info.get(_WROTE):
        raise RuntimeError("end_reads() on a session that has written; do the slow work before the first write")
    session.commit()


def touch(session: Session, column: InstrumentedAttribute, key: object, stored: datetime | None, interval: timedelta,
          *, now: datetime) -> None:
    """Queue ``column = now`` for the row with primary key ``key`` if ``stored`` is older than ``interval``.

    Bookkeeping such as a token's last-used time is coalesced this way: a burst
    of requests writes nothing until the stored value is ``interval`` old, and
    the write itself happens after the request's session closes (see
    :func:`apply_touches`), so a reader stays a reader.
    """
    if stored is None or now - stored >= interval:
        session.info.setdefault(_TOUCHES, []).append((column, key, now, interval))


def pending_touches(session: Session) -> list[tuple]:
    """The bookkeeping updates queued on ``session`` (taken off it)."""
    return session.info.pop(_TOUCHES, [])


def apply_touches(factory: sessionmaker[Session], touches: list[tuple]) -> None:
    """Run queued bookkeeping updates in one short transaction of ``factory`` (write sessions).

    Each update is conditional on the stored value still being old, so
    concurrent requests that queued the same update change the row once.
    """
    if not touches:
        return
    with transaction(factory) as session:
        apply_touches_in(session, touches)


def apply_touches_in(session: Session, touches: list[tuple]) -> None:
    """Run queued bookkeeping updates in ``session`` (a write session), as part of its transaction."""
    for column, key, now, interval in touches:
        model = column.class_
        primary = inspect(model).primary_key[0]
        stale = or_(column.is_(None), column <= now - interval)  # the same test as touch() made
        session.execute(
            update(model).where(primary == key, stale).values({column: now}).execution_options(synchronize_session=False)
        )


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session whose work is committed on success and rolled back on error.

    Bookkeeping queued with :func:`touch` is written after the session closes.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
        touches = pending_touches(session)
    apply_touches(factory, touches)


def check_database(engine: Engine) -> None:
    """Raise UnavailableError if the database does not answer a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise UnavailableError("The database does not answer.", hint=str(exc.orig)[:200]) from exc
