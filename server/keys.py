"""The server's signing keys: the current one, the retired ones, and the hand-overs between them.

All of it lives in files next to the signing key (never in the database, so a
stolen database alone signs and opens nothing):

- ``server-signing-key.pem``: the current key (``signing_key_file``);
- ``retired-signing-keys/*.pem``: every key a rotation retired, kept so that
  escrowed passwords sealed under it still open (server.escrow);
- ``signing-key-handovers.json``: every hand-over statement
  (protocol.key_handover), oldest first; public, served to agents.

:func:`KeyRing.rotate` makes a new key, signs the hand-over with the old and
the new key, retires the old key and puts the new one in place, under a file
lock, in an order that a crash cannot leave half done: the new key is written
beside the current one first, and a hand-over naming a key that is not yet in
place is completed the next time the ring is read. A running server notices a
rotation made by another process (``helpline server rotate-key`` on the server
machine, or another server process sharing the files) at its next signature:
the ring re-reads the files when they change.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from protocol import signing
from protocol.errors import ConfigError
from protocol.key_handover import Handover, KeyRotated, make_handover
from server.audit import Actor, record
from server.db import create_db_engine, session_factory, transaction
from server.escrow import EscrowKey
from server.settings import ServerSettings

log = logging.getLogger("helpline.server.keys")

RETIRED_DIR = "retired-signing-keys"
HANDOVERS_FILE = "signing-key-handovers.json"
_NEXT_SUFFIX = ".next"
_LOCK_FILE = ".signing-key.lock"
_handovers = TypeAdapter(list[Handover])


def retired_dir(key_file: Path) -> Path:
    return key_file.parent / RETIRED_DIR


def handovers_file(key_file: Path) -> Path:
    return key_file.parent / HANDOVERS_FILE


def key_files(key_file: Path) -> list[Path]:
    """Every file the ring keeps (for backups): the current key, the hand-overs and the retired keys that exist."""
    found = [p for p in (key_file, handovers_file(key_file)) if p.exists()]
    folder = retired_dir(key_file)
    if folder.is_dir():
        found += sorted(folder.glob("*.pem"))
    return found


def read_handovers(key_file: Path) -> list[Handover]:
    """The hand-overs written next to ``key_file``, oldest first (none before the first rotation)."""
    path = handovers_file(key_file)
    try:
        return _handovers.validate_json(path.read_bytes())
    except FileNotFoundError:
        return []
    except ValidationError as exc:
        raise ConfigError(f"The key hand-over file {path} is damaged.",
                          hint="Restore it from a backup (`helpline server restore`).") from exc


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retired_name(handover: Handover) -> str:
    digest = signing.fingerprint(handover.old_key).removeprefix("SHA256:")
    safe = "".join(c if c.isalnum() else "_" for c in digest)[:16]
    return f"{handover.issued_at:%Y%m%dT%H%M%SZ}-{safe}.pem"


@contextmanager
def _locked(key_file: Path) -> Iterator[None]:
    """One rotation at a time over every process that shares ``key_file``."""
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_file.parent / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _complete_interrupted_rotation(key_file: Path, handovers: list[Handover]) -> None:
    """Put the new key in place if a rotation wrote its hand-over and stopped before that."""
    pending = key_file.with_name(key_file.name + _NEXT_SUFFIX)
    if not handovers or not pending.exists():
        return
    new = signing.load_private_key(pending)
    if signing.public_key_b64(new) == handovers[-1].new_key:
        os.replace(pending, key_file)
        _fsync_dir(key_file.parent)
        log.warning("completed an interrupted key rotation: the key %s is now in place", handovers[-1].new_fingerprint)
    else:  # written by a rotation that stopped before its hand-over: never announced, never used
        pending.unlink()


def rotate_files(key_file: Path, *, now: datetime, valid_for: timedelta) -> Handover:
    """Rotate the key kept in ``key_file``: retire it, hand over to a new one; return the hand-over."""
    with _locked(key_file):
        handovers = read_handovers(key_file)
        _complete_interrupted_rotation(key_file, handovers)
        old = signing.load_private_key(key_file)
        new = signing.generate_key()
        handover = make_handover(old, new, issued_at=now, valid_for=valid_for)
        folder = retired_dir(key_file)
        folder.mkdir(exist_ok=True, mode=0o700)
        signing.save_private_key(old, folder / _retired_name(handover))
        pending = key_file.with_name(key_file.name + _NEXT_SUFFIX)
        signing.save_private_key(new, pending)
        data = _handovers.dump_json([*handovers, handover], indent=2)
        _write_atomically(handovers_file(key_file), data, 0o644)
        os.replace(pending, key_file)  # from here on the server signs with the new key
        _fsync_dir(key_file.parent)
    return handover


class KeyRing:
    """The server's signing keys as kept in files; re-read when they change (another process rotated)."""

    def __init__(self, key_file: Path):
        self.key_file = key_file
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._current: Ed25519PrivateKey | None = None
        self._retired: tuple[Ed25519PrivateKey, ...] = ()
        self._handovers: tuple[Handover, ...] = ()
        #: Seals and opens escrowed passwords with the current key and the retired ones; follows the ring.
        self.escrow_key: EscrowKey | None = None
        self.refresh()

    @classmethod
    def open(cls, key_file: Path) -> KeyRing:
        """The ring kept at ``key_file``, whose current key is created (0600) on first use."""
        if not key_file.exists() and not handovers_file(key_file).exists():
            signing.load_or_create_private_key(key_file)
        return cls(key_file)

    def _files_stamp(self) -> tuple:
        stamp = []
        for path in (self.key_file, handovers_file(self.key_file)):
            try:
                st = path.stat()
                stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stamp.append(None)
        return tuple(stamp)

    def refresh(self) -> None:
        """Re-read the files if they changed since the last read (a stat of two files when they did not)."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return
        with self._lock:
            if self._files_stamp() == self._stamp:
                return
            handovers = read_handovers(self.key_file)
            if handovers and signing.public_key_b64(signing.load_private_key(self.key_file)) != handovers[-1].new_key:
                with _locked(self.key_file):
                    handovers = read_handovers(self.key_file)
                    _complete_interrupted_rotation(self.key_file, handovers)
            stamp = self._files_stamp()
            current = signing.load_private_key(self.key_file)
            folder = retired_dir(self.key_file)
            retired = tuple(signing.load_private_key(p) for p in sorted(folder.glob("*.pem"))) if folder.is_dir() else ()
            if self.escrow_key is None:
                self.escrow_key = EscrowKey(current, retired, before_use=self.refresh)
            else:
                self.escrow_key._use(current, retired)
            self._current, self._retired, self._handovers, self._stamp = current, retired, tuple(handovers), stamp

    @property
    def current(self) -> Ed25519PrivateKey:
        """The key the server signs with now."""
        self.refresh()
        assert self._current is not None
        return self._current

    @property
    def public_key(self) -> str:
        return signing.public_key_b64(self.current)

    def handovers(self) -> list[Handover]:
        """Every hand-over made, oldest first."""
        self.refresh()
        return list(self._handovers)

    def retired_public_keys(self) -> list[str]:
        self.refresh()
        return [signing.public_key_b64(k) for k in self._retired]

    def rotate(self, *, now: datetime, valid_for: timedelta) -> Handover:
        """Hand over to a new key (see :func:`rotate_files`); this ring uses it at once."""
        handover = rotate_files(self.key_file, now=now, valid_for=valid_for)
        self.refresh()
        return handover


def rotate_key(keys: KeyRing, session: Session, actor: Actor, *, now: datetime, valid_for: timedelta) -> KeyRotated:
    """Rotate ``keys`` and audit it (``server.key.rotated``) in ``session``'s transaction."""
    handover = keys.rotate(now=now, valid_for=valid_for)
    record(session, actor, "server.key.rotated", "server_key", handover.new_fingerprint,
           previous=handover.old_fingerprint, not_after=handover.not_after.isoformat())
    log.warning("the server's signing key was rotated: %s -> %s", handover.old_fingerprint, handover.new_fingerprint)
    return KeyRotated(fingerprint=handover.new_fingerprint, previous_fingerprint=handover.old_fingerprint,
                      handover=handover)


def rotate_local(settings: ServerSettings, *, now: datetime) -> KeyRotated:
    """`helpline server rotate-key` on the server machine: rotate the key files and audit it in the database.

    A running server notices the new key at its next signature. Raise
    ConfigError if the server has no signing key yet (never set up).
    """
    key_file = settings.resolved_signing_key_file
    if not key_file.exists():
        raise ConfigError(f"There is no signing key at {key_file}.",
                          hint="Set the server up first: `helpline server init`.")
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with transaction(session_factory(engine)) as session:
            return rotate_key(KeyRing(key_file), session, Actor.system("server rotate-key"), now=now,
                              valid_for=timedelta(days=settings.keys.handover_days))
    finally:
        engine.dispose()
