"""Reading a PC's restic snapshot files with its escrowed password, to refuse snapshots dated in the future.

A PC could upload fake snapshots dated next year so that the server's prune,
keeping the newest snapshots of each period, throws its real history out of
the retention window. The REST backend therefore shows every uploaded
``snapshots/<name>`` file to :func:`check_snapshot_upload` before storing it.
The file is encrypted, so the check needs the repository's master key:

- the repository's ``keys/`` files (JSON) each hold the master key encrypted
  with a key derived from a password by scrypt (the KDF parameters and salt are
  in the file); the PC's escrowed password (server.escrow) opens one of them;
- every other file is ``IV (16 bytes) || AES-256-CTR ciphertext || MAC (16 bytes)``,
  the MAC being Poly1305-AES over the ciphertext with the master key's MAC key
  (``k`` encrypts the IV into the Poly1305 pad, ``r`` is the Poly1305 key);
- a decrypted snapshot is a JSON document, or, in a version 2 repository, a
  header byte 2 followed by the document compressed with zstandard (``{`` or
  ``[`` as the first byte means plain JSON); its ``time`` is an RFC 3339 date.

With escrow on and a password stored, a snapshot the server cannot open with
it is refused (so a PC cannot slip past the check by escrowing a wrong
password: it must escrow one that opens its repository, and then the server
reads what it uploads), and so is one dated more than :data:`FUTURE_ALLOWANCE`
ahead. Without an escrowed password the server cannot read the file and
accepts it (docs/threat-model.md). Key files come from the PC, so their
scrypt costs are bounded before any work, and what a key file yields (or that
it yields nothing) is remembered per password, so a flood of uploads does not
repeat the derivation.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import ForbiddenError, HelplineError
from protocol.untrusted import shown
from server import ratelimit
from server.audit import Actor, record
from server.escrow import open_password, session_escrow
from server.models import Agent, ResticObject
from server.refusals import keep_trace
from server.restic_rest.backend import target
from server.snapshots import FUTURE_ALLOWANCE

#: Key files tried per upload (a PC could add many); the oldest first, as the one made at ``init`` is.
MAX_KEY_FILES = 20
MAX_KEY_FILE_BYTES = 64 * 1024
#: A decrypted, decompressed snapshot document is small; anything larger is refused, not inflated.
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
# scrypt parameters a key file may ask for: what restic makes with room to spare, and no more.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024  # 128 * N * r bytes
MAX_SCRYPT_WORK = 1 << 25  # N * r * p; restic's usual 32768 * 8 * 10 is about 1 << 21.3
_CACHE_SIZE = 1024
#: A refused snapshot (restic retries it many times) is audited once per this many seconds.
REFUSAL_WINDOW_SECONDS = 3600

log = logging.getLogger("helpline.server.restic_rest.inspect")

_IV, _MAC = 16, 16
_FRACTION = re.compile(r"(\.\d{6})\d+")


class Unreadable(ValueError):
    """A file that does not open with the key given, or is not what it says."""


class WrongKey(Unreadable):
    """An encrypted file whose MAC does not match the key given (another key may open it)."""


@dataclass(frozen=True)
class MasterKey:
    """A repository's master key: AES-256 for encryption, and the two halves of the Poly1305-AES MAC key."""

    encrypt: bytes
    mac_k: bytes
    mac_r: bytes

    def __repr__(self) -> str:  # never in a log or a traceback's locals by accident
        return "MasterKey(…)"


def decrypt(key: MasterKey, blob: bytes) -> bytes:
    """The plaintext of ``IV || ciphertext || MAC``; WrongKey if the MAC does not match ``key``."""
    if len(blob) < _IV + _MAC:
        raise WrongKey("too short to be an encrypted file")
    iv, ciphertext, mac = blob[:_IV], blob[_IV:-_MAC], blob[-_MAC:]
    pad = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor().update(iv)
    try:
        Poly1305.verify_tag(key.mac_r + pad, ciphertext, mac)
    except InvalidSignature:
        raise WrongKey("the MAC does not match this key") from None
    decryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def unpack(plaintext: bytes) -> bytes:
    """The JSON document of a decrypted metadata file (plain, or zstandard after header byte 2); Unreadable otherwise."""
    if plaintext[:1] in (b"{", b"["):
        return plaintext
    if plaintext[:1] != b"\x02":
        raise Unreadable("unknown encoding of a repository file")
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plaintext[1:]))
        parts, size = [], 0
        while size <= MAX_SNAPSHOT_BYTES:
            part = reader.read(1 << 20)
            if not part:
                return b"".join(parts)
            parts.append(part)
            size += len(part)
    except zstandard.ZstdError as exc:
        raise Unreadable("damaged compressed data") from exc
    raise Unreadable(f"the document is over {MAX_SNAPSHOT_BYTES} bytes")


def _b64(value: Any, length: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (TypeError, ValueError) as exc:
        raise Unreadable("a field is not base64") from exc
    if length is not None and len(raw) != length:
        raise Unreadable("a key has the wrong length")
    return raw


def _master_key_of(document: Any) -> MasterKey:
    try:
        return MasterKey(_b64(document["encrypt"], 32), _b64(document["mac"]["k"], 16), _b64(document["mac"]["r"], 16))
    except (KeyError, TypeError) as exc:
        raise Unreadable("not a master key") from exc


def _scrypt_costs(document: dict) -> tuple[int, int, int]:
    n, r, p = (document.get(k) for k in ("N", "r", "p"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, r, p)):
        raise Unreadable("the key file's scrypt parameters are not positive integers")
    if n < 2 or n & (n - 1) or 128 * n * r > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
        raise Unreadable("the key file asks for more scrypt work than a restic key needs")
    return n, r, p


def open_key_file(password: str, key_file: bytes) -> MasterKey:
    """The master key a restic key file holds, opened with ``password``; Unreadable if it does not open."""
    try:
        document = json.loads(key_file)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable("the key file is not JSON") from exc
    if not isinstance(document, dict) or document.get("kdf") != "scrypt":
        raise Unreadable("the key file does not use scrypt")
    n, r, p = _scrypt_costs(document)
    derived = hashlib.scrypt(password.encode("utf-8"), salt=_b64(document.get("salt")), n=n, r=r, p=p, dklen=64,
                             maxmem=MAX_SCRYPT_MEMORY + (1 << 20))
    user_key = MasterKey(derived[:32], derived[32:48], derived[48:])
    try:
        return _master_key_of(json.loads(decrypt(user_key, _b64(document.get("data")))))
    except ValueError as exc:  # Unreadable, or a JSONDecodeError
        raise Unreadable("the password does not open this key file") from exc


def snapshot_time(key: MasterKey, blob: bytes) -> datetime:
    """The ``time`` of an encrypted snapshot file; WrongKey if it does not open with ``key``, Unreadable if it
    opens but is damaged or has no valid time."""
    document = unpack(decrypt(key, blob))
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", json.loads(document)["time"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError) as exc:
        raise Unreadable("the snapshot has no valid time") from exc
    if when.tzinfo is None:
        raise Unreadable("the snapshot's time has no zone")
    return when


class _KeyFileCache:
    """What each (agent, key file, password) gave: the master key, or None when the password did not open it."""

    def __init__(self, size: int = _CACHE_SIZE):
        self._entries: OrderedDict[tuple[str, str, str], MasterKey | None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, entry: tuple[str, str, str]) -> tuple[bool, MasterKey | None]:
        with self._lock:
            if entry not in self._entries:
                return False, None
            self._entries.move_to_end(entry)
            return True, self._entries[entry]

    def put(self, entry: tuple[str, str, str], key: MasterKey | None) -> None:
        with self._lock:
            self._entries[entry] = key
            self._entries.move_to_end(entry)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_opened = _KeyFileCache()


def master_keys(session: Session, agent_id: str, password: str) -> list[MasterKey]:
    """The master keys ``password`` opens among agent ``agent_id``'s key files (the first :data:`MAX_KEY_FILES`)."""
    escrow = session_escrow(session)
    if escrow is None:
        return []
    names = session.scalars(select(ResticObject.name).where(
        ResticObject.agent_id == agent_id, ResticObject.type == "keys", ResticObject.trashed_at.is_(None),
        ResticObject.size <= MAX_KEY_FILE_BYTES).order_by(ResticObject.created_at, ResticObject.name).limit(MAX_KEY_FILES))
    password_id = hashlib.sha256(b"helpline key-file cache\0" + password.encode("utf-8")).hexdigest()
    keys = []
    for name in names:
        entry = (agent_id, name, password_id)
        known, key = _opened.get(entry)
        if not known:
            try:
                key_file = escrow.blobs.read_range(target(agent_id, "keys", name).key, 0, MAX_KEY_FILE_BYTES)
            except HelplineError as exc:  # the blob store failed us: try again next time, remember nothing
                log.warning("could not read key file %s of agent %s: %s", name, agent_id, exc.message)
                continue
            try:
                key = open_key_file(password, key_file)
            except Unreadable:
                key = None
            _opened.put(entry, key)
        if key is not None:
            keys.append(key)
    return keys


def check_snapshot_upload(session: Session, agent_id: str, data: bytes, now: datetime) -> None:
    """Refuse (ForbiddenError, audited) snapshot file ``data`` for agent ``agent_id``'s repository if it is dated
    ahead of ``now`` by more than :data:`FUTURE_ALLOWANCE`, or cannot be read with the password the PC escrowed.

    Without escrow (turned off, or nothing escrowed) the file cannot be read and is accepted.
    """
    escrow = session_escrow(session)
    if escrow is None or not escrow.settings.escrow:
        return
    password = open_password(session, escrow.key, agent_id)
    if password is None:
        return
    agent = session.get(Agent, agent_id)
    actor = Actor.of_agent(agent) if agent is not None else Actor("agent", agent_id, "PC")

    name = hashlib.sha256(data).hexdigest()

    def refused(message: str, hint: str, **details: Any) -> ForbiddenError:
        # restic tries a refused upload again and again: each snapshot's refusal is audited once a window.
        def write(traced: Session) -> None:
            if ratelimit.hit(traced, f"snapshot-refused:{agent_id}:{name}", REFUSAL_WINDOW_SECONDS, now=now) == 1:
                record(traced, actor, "snapshot.upload_refused", "agent", agent_id, snapshot=name, **details)

        keep_trace(session, write)
        return ForbiddenError(message, hint=hint)

    for key in master_keys(session, agent_id, password):
        try:
            when = snapshot_time(key, data)
        except WrongKey:
            continue  # another key of the repository may open it
        except Unreadable as exc:
            raise refused(f"This snapshot cannot be read: {exc}.", "Run the backup again; restic writes snapshots whole.",
                          reason=str(exc)) from None
        if when > now + FUTURE_ALLOWANCE:
            raise refused(f"This snapshot is dated {shown(when.isoformat())}, ahead of the server's clock; "
                          "it was not stored.", "Check this PC's clock and time zone, then back up again.",
                          reason="dated in the future", dated=when.isoformat())
        return
    raise refused("This snapshot does not open with the repository password this PC escrowed; it was not stored.",
                  "The PC escrows its current repository password again, then backs up.",
                  reason="does not open with the escrowed password")

